"""What every model kind offers, and the check of the labels every kind trains on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from ..errors import NoTrainingData


class TextClassifier(Protocol):
    kind: str  # recorded in a version's metadata; models/loader.py dispatches on it
    labels: tuple[str, ...]  # class name of each probability column
    version: str
    trained: bool  # False while its outputs mean nothing yet (e.g. a freshly initialized head)
    temperature: float

    def serves(self, classes: Sequence[str]) -> bool:
        """True when it is trained and its outputs are exactly the project's classes (in any order)."""
        ...

    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(len(texts), len(labels)) class probabilities, rows in the order of `texts` (calibrated: the softmax
        of the logits divided by the version's temperature)."""
        ...

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(labels)) class scores before the softmax and the temperature."""
        ...

    def save(self, folder: Path) -> None:
        """Write everything `load` needs into `folder` (the registry's staging folder)."""
        ...


class Unlabeled(Protocol):
    """A project's unlabeled tasks as the worker holds them (retraining.pool.Pool): what training asks of them
    beside their texts, without reading those when it can."""

    vocabulary: Any  # the n-gram vocabulary the linear kind fits under, or None

    @property
    def keys(self) -> np.ndarray:
        """stopping.text_key of each task's text."""
        ...

    def __len__(self) -> int: ...

    def texts(self) -> list[str]: ...

    def probabilities(self, classifier: Any) -> np.ndarray:
        """(tasks, classifier's labels) probabilities; a linear version fitted under `vocabulary` from cached rows."""
        ...


def as_pool(unlabeled: Sequence[str] | Unlabeled) -> Unlabeled | None:
    """`unlabeled` when it is a pool, None when it is texts."""
    return unlabeled if hasattr(unlabeled, "probabilities") else None  # type: ignore[return-value]


def probabilities(classifier: Any, unlabeled: Sequence[str] | Unlabeled) -> np.ndarray:
    """The classifier's probabilities on unlabeled tasks, given as texts or as a pool."""
    pool = as_pool(unlabeled)
    if pool is not None:
        return pool.probabilities(classifier)
    return classifier.predict_proba(list(cast(Sequence[str], unlabeled)))


def serves(labels: Sequence[str], trained: bool, classes: Sequence[str]) -> bool:
    return trained and set(labels) == set(classes) and len(labels) == len(classes)


def label_shortfall(labels: Sequence[str], classes: Sequence[str], minimum: int) -> dict[str, int]:
    """{class: count} of the classes with fewer than `minimum` labels (empty: enough to train)."""
    counts = Counter(labels)
    return {c: counts.get(c, 0) for c in classes if counts.get(c, 0) < minimum}


def check_labels(labels: Sequence[str], classes: Sequence[str], minimum: int) -> Counter:
    """The label counts; NoTrainingData when a label is not a class or a class has fewer than `minimum`."""
    counts = Counter(labels)
    unknown = sorted(set(counts) - set(classes))
    if unknown:
        raise NoTrainingData(f"labels {unknown} are not among the classes {list(classes)}")
    short = label_shortfall(labels, classes, minimum)
    if short:
        raise NoTrainingData(
            f"too few labels to train: {dict(counts)}; every class needs at least {minimum} (short: {short})"
        )
    return counts
