"""When more labels stop paying off: the stabilizing-predictions stopping criterion.

Bloodgood and Vijay-Shanker (2009): keep a set of unlabeled examples (here: the project's unlabeled tasks) and
compare the labels two consecutive model versions predict on it with Cohen's kappa. Once the mean kappa over
the last `window` versions reaches `threshold`, the model has stopped changing: more labels are unlikely to
move it. Kappa above T bounds the change of F1 between the two versions: |delta F| <= 4(1 - T)/T
(Bloodgood and Vijay-Shanker 2009, theorem 1), so T = 0.99 bounds it by 0.04.

Each version keeps a `Snapshot` of what it predicted on the unlabeled tasks when it was trained; the kappa of
a version is computed against the snapshot of the version that served before it, on the tasks both saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from .uncertainty import margin

SNAPSHOT = "unlabeled.npz"
DEFAULT_THRESHOLD = 0.99
DEFAULT_WINDOW = 3


def kappa(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float | None:
    """Cohen's kappa of two label sequences; None for empty ones. Identical sequences agree fully (1.0), even
    when they hold one class only, where the formula is 0/0."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        raise ValueError(f"kappa of sequences of different lengths: {len(a)} and {len(b)}")
    if len(a) == 0:
        return None
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def f_bound(threshold: float) -> float:
    """The largest change of F1 between two versions whose predictions agree with kappa > threshold."""
    if not 0 < threshold <= 1:
        raise ValueError(f"a kappa threshold is in (0, 1], got {threshold}")
    return 4 * (1 - threshold) / threshold


@dataclass(frozen=True)
class StopSignal:
    stop: bool
    mean_kappa: float | None  # over the last `window` versions that have one
    window: int
    threshold: float
    kappas: tuple[float, ...]  # the ones averaged, oldest first

    @property
    def sentence(self) -> str:
        bound = f"|ΔF1| ≤ {f_bound(self.threshold):.2f}"
        if self.mean_kappa is None or len(self.kappas) < self.window:
            return (
                f"Keep labeling: {len(self.kappas)} of the {self.window} versions needed to judge stability so far "
                f"(the model has stopped changing once the mean kappa of {self.window} consecutive versions "
                f"reaches {self.threshold:g})."
            )
        if self.stop:
            return (
                f"The model has stopped changing: more labels are unlikely to help (mean kappa {self.mean_kappa:.3f} "
                f"over the last {self.window} versions ≥ {self.threshold:g}, so {bound} per version)."
            )
        return (
            f"Keep labeling: the model is still changing (mean kappa {self.mean_kappa:.3f} over the last "
            f"{self.window} versions < {self.threshold:g})."
        )

    def as_dict(self) -> dict:
        return {
            "stop": self.stop,
            "mean_kappa": None if self.mean_kappa is None else round(self.mean_kappa, 4),
            "window": self.window,
            "threshold": self.threshold,
            "f1_change_bound": round(f_bound(self.threshold), 4),
            "kappas": [round(k, 4) for k in self.kappas],
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class StabilizingPredictions:
    threshold: float = DEFAULT_THRESHOLD
    window: int = DEFAULT_WINDOW

    def __post_init__(self):
        f_bound(self.threshold)  # validates it
        if self.window < 1:
            raise ValueError(f"the stop window is at least 1 version, got {self.window}")

    def signal(self, kappas: Sequence[float | None]) -> StopSignal:
        """`kappas`: each version's kappa to the one before it, oldest first (None where it has none: the first
        version, or one without a snapshot to compare). Only an unbroken run of the last `window` counts."""
        recent: list[float] = []
        for value in reversed(kappas):
            if value is None or len(recent) == self.window:
                break
            recent.append(float(value))
        recent.reverse()
        mean = float(np.mean(recent)) if recent else None
        stop = len(recent) == self.window and mean is not None and mean >= self.threshold
        return StopSignal(stop, mean, self.window, self.threshold, tuple(recent))

    def stop(self, kappas: Sequence[float | None]) -> bool:
        return self.signal(kappas).stop

    def judge(self, history: Sequence[dict]) -> StopSignal:
        """The signal over a scope's version history (registry.history: the metadata `Snapshot.figures` wrote)."""
        return self.signal([entry.get("kappa_previous") for entry in history])


def text_key(text: str) -> int:
    """A task's key in a snapshot: 64 bits of a hash of its text (tasks are matched by text across versions:
    Label Studio ids are not known where versions are trained offline)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "little")


@dataclass
class Snapshot:
    """What a version predicted on the unlabeled tasks when it was trained: class index and margin per task."""

    keys: np.ndarray  # uint64, one per task
    predicted: np.ndarray  # int, index into the version's classes
    margins: np.ndarray  # float32

    @classmethod
    def of(cls, texts: Sequence[str], probs: np.ndarray) -> Snapshot:
        return cls.of_keys(np.array([text_key(t) for t in texts], dtype=np.uint64), probs)

    @classmethod
    def of_keys(cls, keys: np.ndarray, probs: np.ndarray) -> Snapshot:
        """`keys`: text_key of each task's text."""
        if not len(keys):
            return cls(np.zeros(0, np.uint64), np.zeros(0, np.int16), np.zeros(0, np.float32))
        probs = np.asarray(probs)
        return cls(
            np.asarray(keys, dtype=np.uint64), probs.argmax(axis=1).astype(np.int16), margin(probs).astype(np.float32)
        )

    def save(self, folder: Path) -> None:
        with (folder / SNAPSHOT).open("wb") as handle:
            np.savez_compressed(handle, keys=self.keys, predicted=self.predicted, margins=self.margins)

    @classmethod
    def load(cls, folder: Path) -> Snapshot | None:
        try:
            with np.load(folder / SNAPSHOT, allow_pickle=False) as arrays:
                return cls(arrays["keys"], arrays["predicted"], arrays["margins"])
        except (FileNotFoundError, KeyError, ValueError, OSError):
            return None

    def uncertain(self, threshold: float) -> int:
        return int((self.margins <= threshold).sum())

    def agreement(self, earlier: Snapshot) -> tuple[float | None, int]:
        """(kappa, tasks compared): this snapshot's predicted labels against `earlier`'s on the tasks in both."""
        common, mine, theirs = np.intersect1d(self.keys, earlier.keys, assume_unique=False, return_indices=True)
        return kappa(self.predicted[mine], earlier.predicted[theirs]), len(common)

    def figures(self, earlier: Snapshot | None, threshold: float) -> dict:
        """What a version's metadata records: unlabeled tasks, how many are uncertain, kappa to `earlier`."""
        n = len(self.keys)
        uncertain = self.uncertain(threshold)
        value, compared = self.agreement(earlier) if earlier is not None else (None, 0)
        return {
            "unlabeled": n,
            "uncertain": uncertain,
            "uncertain_share": round(uncertain / n, 4) if n else None,
            "uncertain_margin": threshold,
            "kappa_previous": None if value is None else round(value, 4),
            "kappa_on": compared,
        }
