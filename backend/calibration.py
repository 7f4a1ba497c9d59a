"""Scores that mean what they say: temperature scaling, and how far probabilities are from frequencies.

Pure functions over numpy arrays: `logits` are (n, k) class scores before the softmax, `labels` are (n,)
class indices. One temperature T divides every logit: the predicted class and the order of the margins stay
the same (so F1 and the uncertainty ranking do not change), only how far from 0.5 the probabilities are.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

# T outside these bounds means the held-out labels are too few or too clean to say anything.
T_BOUNDS = (0.05, 20.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    probs = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimizes the negative log-likelihood of `labels`; 1.0 when there is nothing to fit, or when
    the fit runs into a bound: labels the model gets right no better than a coin (a held-out part of only
    the hardest, margin-chosen tweets can be that) would flatten every probability to 0.5 and put every task
    in the uncertain band, which says nothing about the project's other tweets."""
    labels = np.asarray(labels)
    if len(labels) < 2 or len(np.unique(labels)) < 2:
        return 1.0
    bounds = np.log(T_BOUNDS)
    found = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=tuple(bounds), method="bounded"
    )
    if min(abs(found.x - bounds[0]), abs(found.x - bounds[1])) < 0.01:
        return 1.0
    return float(np.exp(found.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |confidence - accuracy| of the top class over equal-width confidence bins, weighted by bin size."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(total)


def reliability_by_margin(probs: np.ndarray, labels: np.ndarray, edges=(0.0, 0.1, 0.3, 0.5, 0.7, 1.0)) -> list[dict]:
    """Per margin bin: how many tasks fall in it and the share the model gets wrong. A calibrated model's
    uncertain band (small margins) holds the tasks it gets wrong."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([np.zeros_like(probs), probs])
    margins = top2[:, 1] - top2[:, 0]
    wrong = probs.argmax(axis=1) != labels
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        members = (margins >= low) & ((margins < high) if high < 1 else (margins <= high))
        rows.append(
            {
                "margin": f"{low:g}-{high:g}",
                "n": int(members.sum()),
                "error_rate": round(float(wrong[members].mean()), 3) if members.any() else None,
            }
        )
    return rows


def calibration_report(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fit T on the labeled logits and say what it changes. The "after" error is cross-fitted (T fitted on one
    half, measured on the other, both ways) so that it is not measured on the data T was fitted to."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    temperature = fit_temperature(logits, labels)
    halves = [np.arange(len(labels)) % 2 == i for i in (0, 1)]
    after = []
    for fit_on, measure_on in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_on], labels[fit_on])
        after.append(expected_calibration_error(softmax(logits[measure_on], t), labels[measure_on]))
    return {
        "temperature": round(temperature, 4),
        "ece_before": round(expected_calibration_error(softmax(logits), labels), 4),
        "ece_after": round(float(np.mean(after)), 4),
        "reliability": reliability_by_margin(softmax(logits, temperature), labels),
    }
