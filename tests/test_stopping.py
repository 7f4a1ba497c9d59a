"""The stop signal: Cohen's kappa between versions, the stabilizing-predictions rule, and snapshots."""

import numpy as np
import pytest

from backend.stopping import Snapshot, StabilizingPredictions, f_bound, kappa


def test_kappa_on_hand_made_labels():
    assert kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    # 3 of 4 agree; by chance 0.5 of them would: (0.75 - 0.5) / (1 - 0.5).
    assert kappa([0, 1, 0, 1], [0, 1, 0, 0]) == pytest.approx(0.5)
    assert kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert kappa([0, 0, 0], [0, 0, 0]) == 1.0  # one class only: 0/0 in the formula, full agreement in fact
    assert kappa([], []) is None
    with pytest.raises(ValueError, match="different lengths"):
        kappa([0], [0, 1])


def test_the_bound_on_the_change_of_f1():
    assert f_bound(0.99) == pytest.approx(4 * 0.01 / 0.99)
    assert f_bound(1.0) == 0
    with pytest.raises(ValueError):
        f_bound(0)


def test_stop_once_the_mean_of_the_last_window_reaches_the_threshold():
    rule = StabilizingPredictions(threshold=0.99, window=3)
    assert not rule.stop([0.5, 0.99, 1.0])  # mean 0.83
    assert rule.stop([0.5, 0.99, 1.0, 0.995])  # the last three: mean 0.995
    assert not rule.stop([1.0, 1.0])  # two versions cannot show three agreeing
    assert not rule.stop([1.0, 1.0, None, 1.0, 1.0])  # a version without a figure breaks the run
    signal = rule.signal([0.2, 0.98, 0.99, 0.995])
    assert signal.kappas == (0.98, 0.99, 0.995)
    assert signal.mean_kappa == pytest.approx(0.98833, abs=1e-4)
    assert not signal.stop and signal.sentence.startswith("Keep labeling: the model is still changing")
    stopped = rule.signal([0.99, 1.0, 1.0])
    assert stopped.stop and "stopped changing" in stopped.sentence and "0.04" in stopped.sentence
    assert StabilizingPredictions(threshold=0.9, window=1).stop([0.95])
    assert rule.judge([{"kappa_previous": None}, {"kappa_previous": 1.0}] + [{"kappa_previous": 0.99}] * 2).stop
    with pytest.raises(ValueError):
        StabilizingPredictions(window=0)


def test_a_snapshot_compares_versions_on_the_tasks_both_saw(tmp_path):
    before = Snapshot.of(["a", "b", "c", "d"], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]))
    # "a" was labeled meanwhile, "e" is new; on b, c, d the new version flips c.
    after = Snapshot.of(["b", "c", "d", "e"], np.array([[0.3, 0.7], [0.45, 0.55], [0.2, 0.8], [0.5, 0.5]]))
    after.save(tmp_path)
    loaded = Snapshot.load(tmp_path)
    assert loaded is not None and np.array_equal(loaded.keys, after.keys)
    value, compared = loaded.agreement(before)
    assert compared == 3
    assert value == pytest.approx(kappa([1, 1, 1], [1, 0, 1]))
    figures = loaded.figures(before, threshold=0.3)
    assert figures["unlabeled"] == 4 and figures["uncertain"] == 2  # c (0.1) and e (0.0)
    assert figures["uncertain_share"] == 0.5 and figures["kappa_on"] == 3
    assert loaded.figures(None, 0.3)["kappa_previous"] is None
    assert Snapshot.load(tmp_path / "nowhere") is None
