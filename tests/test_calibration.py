"""Temperature scaling and calibration error on synthetic logits whose true temperature is known."""

import numpy as np
import pytest

from backend import calibration


def _overconfident(n=4000, scale=4.0, seed=0):
    """Labels and logits `scale` times too large: the log-odds of the generating process times `scale`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    true_log_odds = 2 * ((labels * 2 - 1) + rng.normal(0, 1, n))  # two unit Gaussians at -1 and +1
    return np.column_stack([np.zeros(n), scale * true_log_odds]), labels


def test_the_fitted_temperature_undoes_overconfidence():
    logits, labels = _overconfident(scale=4.0)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(4.0, rel=0.1)
    report = calibration.calibration_report(logits, labels)
    assert report["ece_after"] < report["ece_before"] / 2


def test_temperature_changes_neither_the_label_nor_the_margin_order():
    logits, _ = _overconfident(n=200)
    cold, warm = calibration.softmax(logits, 4.0), calibration.softmax(logits)
    assert (cold.argmax(1) == warm.argmax(1)).all()
    margins = [np.abs(p[:, 0] - p[:, 1]) for p in (cold, warm)]
    assert (np.argsort(margins[0], kind="stable") == np.argsort(margins[1], kind="stable")).all()


def test_the_uncertain_band_holds_the_mistakes_after_calibration():
    logits, labels = _overconfident(scale=4.0)
    t = calibration.fit_temperature(logits, labels)
    rows = calibration.reliability_by_margin(calibration.softmax(logits, t), labels)
    assert rows[0]["error_rate"] > 0.3 and rows[-1]["error_rate"] < 0.1
    assert sum(r["n"] for r in rows) == len(labels)


def test_nothing_to_fit_gives_temperature_one():
    assert calibration.fit_temperature(np.zeros((3, 2)), np.array([1, 1, 1])) == 1.0
    assert calibration.expected_calibration_error(np.zeros((0, 2)), np.array([])) == 0.0


def test_a_fit_that_runs_into_a_bound_keeps_the_raw_scores():
    """Labels that the logits get right only half the time: flattening everything is no calibration."""
    rng = np.random.default_rng(1)
    logits = np.column_stack([np.zeros(200), rng.normal(0, 3, 200)])
    labels = rng.integers(0, 2, 200)
    assert calibration.fit_temperature(logits, labels) == 1.0
