"""Which model serves which project, loaded at start and swapped when a new version is promoted.

Every server process keeps its own ModelStore. Promotion is a file rename in the registry, so each process
notices it on its next /predict (one small file read) and loads the new version; /setup only reads the
name, never loads a model.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from .model import Classifier
from .registry import Registry, Version
from .settings import Settings

log = logging.getLogger(__name__)

UNTRAINED = "untrained"


class ModelStore:
    def __init__(self, settings: Settings, registry: Registry | None = None):
        self.settings = settings
        self.registry = registry or Registry(settings.model_dir)
        self._loaded: dict[Path | str, Classifier] = {}
        self._base_version: str | None = None
        self._lock = threading.Lock()
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)

    def warm_up(self) -> Classifier:
        """Load what serves projects without a version of their own, before the first request."""
        return self.get(None)

    def version_for(self, project: str | int | None) -> str:
        version = self.registry.resolve(project)
        if version is not None:
            return version.name
        return self._base_version or self._load_base().version

    def get(self, project: str | int | None) -> Classifier:
        version = self.registry.resolve(project)
        key: Path | str = version.path if version else self.settings.model_name
        classifier = self._loaded.get(key)
        if classifier is None:
            with self._lock:
                classifier = self._loaded.get(key) or self._load(version)
        return classifier

    def _load(self, version: Version | None) -> Classifier:
        if version is None:
            return self._load_base()
        classifier = Classifier.load(version.path, version=version.name, **model_options(self.settings))
        # Keep the newest version of each scope (and the base), drop the ones it replaced.
        for key in [k for k in self._loaded if isinstance(k, Path) and k.parent == version.path.parent]:
            del self._loaded[key]
        self._loaded[version.path] = classifier
        return classifier

    def _load_base(self) -> Classifier:
        name = self.settings.model_name
        if name in self._loaded:
            return self._loaded[name]
        classifier = Classifier.load(
            name, version=UNTRAINED, labels_override=self.settings.labels_override, **model_options(self.settings)
        )
        if classifier.trained:
            classifier.version = Path(name.rstrip("/")).name
        else:
            log.warning(
                "%s has no trained classification head: /predict answers no pre-annotations until a version is "
                "trained (python -m backend train --csv FILE)", name
            )
        self._base_version = classifier.version
        self._loaded[name] = classifier
        return classifier


def model_options(settings: Settings) -> dict:
    """Classifier.load options from the settings (shared by the server and the re-scoring jobs)."""
    s = settings
    return {"max_length": s.max_length, "batch_size": s.batch_size, "normalize": s.normalize_tweets,
            "dtype": s.inference_dtype}
