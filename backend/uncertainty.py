"""Uncertainty scores over an (n, k) array of class probabilities.

Every score is oriented the same way: ascending order = most uncertain first, so that Label Studio's
"Uncertainty sampling" (which takes the lowest prediction score first) and a Data Manager sort on
"prediction score" both put the tweets the model is least sure about on top.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability; |p(a) - p(b)| for two classes. 0 = a coin toss."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return np.abs(top2[:, 1] - top2[:, 0])


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """The top probability itself: low = unsure."""
    return probs.max(axis=1)


def entropy(probs: np.ndarray) -> np.ndarray:
    """1 - entropy / log(k): 0 = uniform (most uncertain), 1 = one-hot."""
    k = probs.shape[1]
    if k < 2:
        return np.ones(len(probs))
    clipped = np.clip(probs, 1e-12, 1.0)
    h = -(probs * np.log(clipped)).sum(axis=1)
    return 1.0 - h / np.log(k)


STRATEGIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "margin": margin,
    "least_confidence": least_confidence,
    "entropy": entropy,
}


def score(probs: np.ndarray, strategy: str = "margin") -> np.ndarray:
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown uncertainty strategy {strategy!r}; choose one of {sorted(STRATEGIES)}") from None
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"expected an (n, k) probability array, got shape {probs.shape}")
    return fn(probs)
