import numpy as np
import pytest

from backend import uncertainty


def test_margin_two_classes_is_abs_difference():
    probs = np.array([[0.7, 0.3], [0.45, 0.55], [0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(uncertainty.margin(probs), [0.4, 0.1, 0.0, 1.0])


def test_margin_more_classes_is_top1_minus_top2():
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(uncertainty.margin(probs), [0.2, 0.7])


def test_least_confidence_is_top_probability():
    np.testing.assert_allclose(uncertainty.least_confidence(np.array([[0.7, 0.3], [0.45, 0.55]])), [0.7, 0.55])
    np.testing.assert_allclose(uncertainty.least_confidence(np.array([[0.2, 0.5, 0.3]])), [0.5])


def test_entropy_is_one_minus_normalized_entropy():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)  # 0.4690
    np.testing.assert_allclose(uncertainty.entropy(probs), [0.0, 1.0, 1 - h], atol=1e-9)
    np.testing.assert_allclose(uncertainty.entropy(np.array([[1 / 3, 1 / 3, 1 / 3]])), [0.0], atol=1e-9)


@pytest.mark.parametrize("strategy", sorted(uncertainty.STRATEGIES))
def test_ascending_order_puts_most_uncertain_first(strategy):
    probs = np.array([[0.99, 0.01], [0.51, 0.49], [0.8, 0.2]])
    order = np.argsort(uncertainty.score(probs, strategy))
    assert order.tolist() == [1, 2, 0]


def test_unknown_strategy_and_bad_shape_are_rejected():
    with pytest.raises(ValueError, match="unknown uncertainty strategy"):
        uncertainty.score(np.array([[0.5, 0.5]]), "random")
    with pytest.raises(ValueError, match="shape"):
        uncertainty.score(np.array([0.5, 0.5]))
