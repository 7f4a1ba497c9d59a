"""Training a version: the labels check, the hold-out split, and what a stored version records."""

import pytest

from backend.errors import NoTrainingData
from backend.models.base import check_labels, label_shortfall
from backend.models.finetune import TrainConfig
from backend.models.training import holdout_split, train_version
from backend.registry import Registry
from backend.settings import Settings


def test_too_few_labels_is_refused_with_counts(tmp_path):
    config = TrainConfig.from_settings(Settings(), warm=False)
    with pytest.raises(NoTrainingData, match=r"xenófobo.: 1"):
        train_version(
            ["a", "b", "c"],
            ["ok", "ok", "xenófobo"],
            ["ok", "xenófobo"],
            base_model=Settings().model_name,
            registry=Registry(tmp_path),
            scope="default",
            config=config,
        )
    assert Registry(tmp_path).current("default") is None


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(NoTrainingData, match=r"\['spam'\] are not among"):
        check_labels(["ok", "spam", "xenófobo"], ["ok", "xenófobo"], 1)
    assert label_shortfall(["ok"] * 5 + ["xenófobo"] * 2, ["ok", "xenófobo"], 3) == {"xenófobo": 2}
    assert label_shortfall(["ok"] * 5 + ["xenófobo"] * 3, ["ok", "xenófobo"], 3) == {}


def test_holdout_is_stratified_and_skipped_when_a_class_is_too_small():
    config = TrainConfig(epochs=1, learning_rate=1e-4, min_steps=0, eval_fraction=0.2, min_eval_per_class=4)
    texts = [f"t{i}" for i in range(100)]
    labels = ["ok"] * 80 + ["xenófobo"] * 20
    train_x, eval_x, train_y, eval_y = holdout_split(texts, labels, config)
    assert len(eval_x) == 20 and eval_y.count("xenófobo") == 4 and not set(train_x) & set(eval_x)
    few = ["ok"] * 80 + ["xenófobo"] * 10  # 10 * 0.2 = 2 < 4 held-out examples of the rare class
    assert holdout_split(texts[:90], few, config)[1] == []


def test_warm_start_recipe_halves_the_rate_and_the_minimum_steps():
    settings = Settings(train_learning_rate=1e-4, train_min_steps=100, train_epochs=4, warm_start_epochs=2)
    cold, warm = TrainConfig.from_settings(settings, warm=False), TrainConfig.from_settings(settings, warm=True)
    assert (cold.epochs, cold.learning_rate, cold.min_steps) == (4, 1e-4, 100)
    assert (warm.epochs, warm.learning_rate, warm.min_steps) == (2, 5e-5, 50)


def test_a_trained_version_records_its_kind_and_figures(trained_model_dir):
    meta = Registry(trained_model_dir).current("default").metadata
    assert meta["kind"] == "transformer" and meta["classes"] == ["ok", "xenófobo"]
    assert meta["labels_used"] == sum(meta["label_counts"].values()) == meta["train_size"] + meta["eval_size"]
    assert set(meta["metrics"]["f1"]) == {"ok", "xenófobo"} and 0 <= meta["metrics"]["f1_macro"] <= 1
