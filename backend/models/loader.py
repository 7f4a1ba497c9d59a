"""The one way to turn a stored version, or the base model MODEL_NAME, into a classifier.

A version's metadata records its `kind`; versions stored before kinds existed are transformers. The settings
give every kind the same inference options, so the server, the re-scoring jobs, the CLI and the tests all
score alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..registry import Version, kind_of
from ..settings import Settings
from .base import TextClassifier
from .linear import LinearClassifier
from .transformer import TransformerClassifier

log = logging.getLogger(__name__)

KINDS: dict[str, type[TransformerClassifier] | type[LinearClassifier]] = {
    TransformerClassifier.kind: TransformerClassifier,
    LinearClassifier.kind: LinearClassifier,
}
# What the base model answers as its version while its classification head is untrained.
UNTRAINED = "untrained"


def load_version(version: Version, settings: Settings, **overrides) -> TextClassifier:
    """The classifier stored as `version`, with the temperature it was calibrated with; `overrides`: inference
    options (e.g. dtype="float32"). Each kind takes the options it knows."""
    meta = version.read_metadata()
    return _load(
        kind_of(meta), version.path, version.name, settings, temperature=meta.get("temperature", 1.0), **overrides
    )


def load_base(settings: Settings, **overrides) -> TextClassifier:
    """MODEL_NAME served as is: a fine-tuned checkpoint (its folder's name is its version), or a base model
    whose untrained head answers no predictions (version "untrained")."""
    name = settings.model_name
    classifier = _load(TransformerClassifier.kind, name, UNTRAINED, settings, settings.labels_override, **overrides)
    if classifier.trained:
        classifier.version = Path(name.rstrip("/")).name
    else:
        log.warning(
            "%s has no trained classification head: /predict answers no pre-annotations until a version is "
            "trained (python -m backend train --csv FILE)",
            name,
        )
    return classifier


def _load(
    kind: str, source: str | Path, version: str, settings: Settings, labels_override: Sequence[str] = (), **overrides
) -> TextClassifier:
    try:
        loader = KINDS[kind]
    except KeyError:
        raise ValueError(f"version {version} is of kind {kind!r}; this backend knows {sorted(KINDS)}") from None
    options = {
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
        "normalize": settings.normalize_tweets,
        "dtype": settings.inference_dtype,
        "device": settings.torch_device,
        **overrides,
    }
    return loader.load(source, version=version, labels_override=labels_override, **options)
