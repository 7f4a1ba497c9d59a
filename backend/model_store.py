"""Which model serves which project, loaded at start and swapped when a new version is promoted.

Every server process keeps its own ModelStore. Promotion is a file rename in the registry, so each process
notices it on its next /predict (one small file read) and loads the new version; /setup only reads the
name, never loads a model. A version that is missing or does not load never breaks serving: the project gets
the newest version of its own that loads (then the default scope's, then MODEL_NAME), the error is logged, and
/health and /metrics say so until CURRENT names a version that loads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from . import metrics
from .models.base import TextClassifier
from .models.loader import load_base, load_version
from .registry import DEFAULT_SCOPE, Registry, Version, scope_of
from .settings import Settings

log = logging.getLogger(__name__)


class ModelStore:
    def __init__(self, settings: Settings, registry: Registry | None = None):
        self.settings = settings
        self.registry = registry or Registry(settings.model_dir)
        self._loaded: dict[Path | str, TextClassifier] = {}
        self._lock = threading.Lock()
        # Versions that failed to load in this process, and why in words; they are skipped until it restarts.
        self._broken: dict[Path, str] = {}
        # Scopes served by something other than what their CURRENT names, and why (/health, /metrics).
        self.degraded: dict[str, str] = {}
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)

    def warm_up(self) -> TextClassifier:
        """Load what serves projects without a version of their own, before the first request."""
        return self.get(None)

    def version_for(self, project: str | int | None) -> str:
        """The version that serves `project`, without loading anything (for /setup)."""
        for version in self._choices(scope_of(project)):
            if version.path not in self._broken:
                return version.name
        return self._base().version

    def get(self, project: str | int | None) -> TextClassifier:
        """The classifier serving `project`: the version its CURRENT names; when that one is missing or does not
        load, the newest version of the project that loads, then the default scope's, then MODEL_NAME."""
        scope = scope_of(project)
        for version in self._choices(scope):
            if version.path in self._broken:
                continue
            classifier = self._loaded.get(version.path)
            if classifier is None:
                try:
                    with self._lock:
                        classifier = self._loaded.get(version.path) or self._load(version)
                except Exception as exc:  # missing or truncated weights, unreadable metadata: any of them
                    self._broken[version.path] = _in_words(exc)
                    log.error(
                        "version %s (%s) does not load (%s: %s); serving the next version that does",
                        version.name,
                        version.path,
                        type(exc).__name__,
                        exc,
                    )
                    continue
            self._note(scope, version.name)
            return classifier
        self._note(scope, None)
        return self._base()

    def _choices(self, scope: str) -> Iterator[Version]:
        """What may serve a scope, best first: for the scope, then the default scope, the version CURRENT names,
        then (only where CURRENT names one) the other versions, newest first."""
        for name in dict.fromkeys([scope, DEFAULT_SCOPE]):
            current = self.registry.current(name)
            if current is not None:
                yield current
            if self.registry.current_name(name) is not None:
                yield from (v for v in reversed(self.registry.versions(name)) if current is None or v != current)

    def recheck(self) -> dict[str, str]:
        """The degraded scopes, dropping those whose CURRENT now names a version not known to be broken (a rollback
        or a newer promotion): a process that serves the scope no more would otherwise report it for ever. Reads
        small files, loads nothing; the next /predict loads the version, and notes it again if it fails."""
        for scope in list(self.degraded):
            owner = scope if self.registry.current_name(scope) is not None else DEFAULT_SCOPE
            version = self.registry.current(owner)
            if self.registry.current_name(owner) is None or (version is not None and version.path not in self._broken):
                del self.degraded[scope]
                metrics.DEGRADED.labels(scope).set(0)
        return self.degraded

    def _note(self, scope: str, served: str | None) -> None:
        """Record whether `scope` is served by what its CURRENT (or, having none, the default's) names."""
        owner = scope if self.registry.current_name(scope) is not None else DEFAULT_SCOPE
        wanted = self.registry.current_name(owner)
        if wanted is None or served == wanted:
            if self.degraded.pop(scope, None) is not None:
                metrics.DEGRADED.labels(scope).set(0)
            return
        version = self.registry.current(owner)
        problem = f"does not load ({self._broken.get(version.path, '?')})" if version else "is not in the registry"
        reason = f"the CURRENT of scope {owner} names {wanted}, which {problem}"
        message = f"{reason}; serving {served or 'the base model (MODEL_NAME)'} instead"
        if self.degraded.get(scope) != message:
            log.error("project scope %s: %s", scope, message)
            self.degraded[scope] = message
            metrics.DEGRADED.labels(scope).set(1)

    def _load(self, version: Version) -> TextClassifier:
        classifier = load_version(version, self.settings)
        # Keep the newest version of each scope (and the base), drop the ones it replaced.
        for key in [k for k in self._loaded if isinstance(k, Path) and k.parent == version.path.parent]:
            del self._loaded[key]
        self._loaded[version.path] = classifier
        return classifier

    def _base(self) -> TextClassifier:
        name = self.settings.model_name
        classifier = self._loaded.get(name)
        if classifier is None:
            with self._lock:
                classifier = self._loaded.get(name) or self._loaded.setdefault(name, load_base(self.settings))
        return classifier


def _in_words(exc: Exception) -> str:
    """Why a version does not load, as /health says it: open to anyone who reaches the port, so no path and no
    exception text (the log has both)."""
    if isinstance(exc, FileNotFoundError):
        return "a file of it is missing"
    if isinstance(exc, PermissionError):
        return "the backend may not read its files"
    return "its files are damaged or unreadable"
