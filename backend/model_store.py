"""Which model serves which project, loaded at start and swapped when a new version is promoted.

Every server process keeps its own ModelStore. Promotion is a file rename in the registry, so each process
notices it on its next /predict (one small file read) and loads the new version; /setup only reads the
name, never loads a model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from .models.base import TextClassifier
from .models.loader import load_base, load_version
from .registry import Registry, Version
from .settings import Settings


class ModelStore:
    def __init__(self, settings: Settings, registry: Registry | None = None):
        self.settings = settings
        self.registry = registry or Registry(settings.model_dir)
        self._loaded: dict[Path | str, TextClassifier] = {}
        self._lock = threading.Lock()
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)

    def warm_up(self) -> TextClassifier:
        """Load what serves projects without a version of their own, before the first request."""
        return self.get(None)

    def version_for(self, project: str | int | None) -> str:
        version = self.registry.resolve(project)
        return version.name if version is not None else self._base().version

    def get(self, project: str | int | None) -> TextClassifier:
        version = self.registry.resolve(project)
        if version is None:
            return self._base()
        classifier = self._loaded.get(version.path)
        if classifier is None:
            with self._lock:
                classifier = self._loaded.get(version.path) or self._load(version)
        return classifier

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
