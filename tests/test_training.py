"""Training a version: the labels check, the stable held-out part, candidates and the promotion rule."""

import numpy as np
import pytest

from backend.errors import NoTrainingData
from backend.models.base import check_labels, label_shortfall
from backend.models.finetune import TrainConfig
from backend.models.training import held_out, selection_metric, train_version
from backend.registry import Registry
from backend.settings import Settings
from tests.helpers import CONFIG, read_demo

ROWS = read_demo("tweets_labeled.csv")
TEXTS, LABELS = [r["text"] for r in ROWS], [r["label"] for r in ROWS]


def _train(tmp_path, texts=TEXTS, labels=LABELS, kinds=("linear",), **kw):
    settings = Settings(model_dir=tmp_path)
    return train_version(
        texts,
        labels,
        CONFIG.classes,
        kinds=list(kinds),
        settings=settings,
        registry=Registry(tmp_path),
        scope="7",
        **kw,
    )


def test_too_few_labels_is_refused_with_counts(tmp_path):
    with pytest.raises(NoTrainingData, match=r"xenófobo.: 1"):
        _train(tmp_path, ["a", "b", "c"], ["ok", "ok", "xenófobo"])
    assert Registry(tmp_path).current("7") is None


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(NoTrainingData, match=r"\['spam'\] are not among"):
        check_labels(["ok", "spam", "xenófobo"], ["ok", "xenófobo"], 1)
    assert label_shortfall(["ok"] * 5 + ["xenófobo"] * 2, ["ok", "xenófobo"], 3) == {"xenófobo": 2}
    assert label_shortfall(["ok"] * 5 + ["xenófobo"] * 3, ["ok", "xenófobo"], 3) == {}


def test_the_held_out_part_is_the_same_every_run_and_about_a_fifth():
    mask = held_out(TEXTS)
    assert 0.1 < mask.mean() < 0.3
    assert np.array_equal(held_out(list(reversed(TEXTS)))[::-1], mask)  # by text, not by position
    assert held_out(["Hola mundo", "hola mundo "]).tolist() in ([True, True], [False, False])


def test_the_selection_metric_is_the_rarest_class():
    assert selection_metric(["ok", "xenófobo"], ["ok"] * 9 + ["xenófobo"]) == "f1:xenófobo"
    assert selection_metric(["a", "b", "c"], ["a", "b", "c"]) == "f1_macro"


def test_a_linear_version_records_its_candidates_decision_and_calibration(tmp_path):
    outcome = _train(tmp_path)
    meta = outcome.version.metadata
    assert meta["kind"] == "linear" and meta["classes"] == ["ok", "xenófobo"]
    assert meta["labels_used"] == len(LABELS) and meta["selection_metric"] == "f1:xenófobo"
    (candidate,) = meta["candidates"]
    assert candidate["kind"] == "linear" and candidate["score"] == meta["metrics"]["f1"]["xenófobo"]
    assert meta["temperature"] == candidate["calibration"]["temperature"] > 0
    assert meta["decision"].startswith("promoted linear")


def test_with_few_labels_the_linear_kind_is_cross_validated_and_the_transformer_is_no_candidate(tmp_path):
    few_x = TEXTS[:30]
    few_y = ["xenófobo" if i % 5 == 0 else "ok" for i in range(30)]  # 6 of one class: too few to hold out 4
    outcome = _train(tmp_path, few_x, few_y, kinds=("linear", "transformer"))
    linear, transformer = outcome.version.metadata["candidates"]
    assert "cross-validation" in linear["evaluated_on"] and linear["kind"] == "linear"
    assert transformer["skipped"] == "too few held-out labels to compare it" and transformer["score"] is None


def _serving_transformer(tmp_path, f1: float):
    """A stored version that claims to be a transformer with held-out F1 `f1` (its weights are not needed)."""

    class Stub:
        kind = "transformer"

        def save(self, folder):
            (folder / "weights").write_text("w")

    registry = Registry(tmp_path)
    return registry.store(
        "7",
        Stub(),
        {
            "classes": list(CONFIG.classes),
            "eval_size": 40,
            "metrics": {"f1": {"xenófobo": f1, "ok": 0.9}, "f1_macro": 0.8},
        },
    )


def test_a_fast_run_keeps_a_serving_transformer_that_measured_better(tmp_path):
    serving = _serving_transformer(tmp_path, f1=0.99)
    outcome = _train(tmp_path, serving=serving)
    assert outcome.version is None and outcome.decision.startswith(f"kept {serving.name}")
    assert Registry(tmp_path).current("7").name == serving.name


def test_a_fast_run_replaces_a_serving_transformer_that_measured_worse(tmp_path):
    serving = _serving_transformer(tmp_path, f1=0.01)
    outcome = _train(tmp_path, serving=serving)
    assert outcome.version.metadata["kind"] == "linear"
    assert Registry(tmp_path).current("7").name == outcome.version.name
    assert any(c.get("version") == serving.name for c in outcome.version.metadata["candidates"])


def test_warm_start_recipe_halves_the_rate_and_the_minimum_steps():
    settings = Settings(train_learning_rate=1e-4, train_min_steps=100, train_epochs=4, warm_start_epochs=2)
    cold, warm = TrainConfig.from_settings(settings, warm=False), TrainConfig.from_settings(settings, warm=True)
    assert (cold.epochs, cold.learning_rate, cold.min_steps) == (4, 1e-4, 100)
    assert (warm.epochs, warm.learning_rate, warm.min_steps) == (2, 5e-5, 50)


def test_a_trained_transformer_version_records_its_kind_and_figures(trained_model_dir):
    meta = Registry(trained_model_dir).current("default").metadata
    assert meta["kind"] == "transformer" and meta["classes"] == ["ok", "xenófobo"]
    assert meta["labels_used"] == sum(meta["label_counts"].values())
    assert set(meta["metrics"]["f1"]) == {"ok", "xenófobo"} and 0 <= meta["metrics"]["f1_macro"] <= 1


def test_each_version_records_the_uncertain_share_and_kappa_to_the_serving_one(tmp_path):
    from backend.stopping import Snapshot

    pool = [r["text"] for r in read_demo("tweets_pool.csv")]
    first = _train(tmp_path, TEXTS[:60], LABELS[:60], unlabeled=pool).version
    meta = first.metadata
    assert meta["unlabeled"] == len(pool) and meta["kappa_previous"] is None
    assert 0 <= meta["uncertain"] <= len(pool) and meta["uncertain_share"] == round(meta["uncertain"] / len(pool), 4)
    second = _train(tmp_path, TEXTS[:120], LABELS[:120], unlabeled=pool[10:], serving=first).version
    meta2 = second.metadata
    assert meta2["kappa_on"] == len(set(pool[10:]))
    # The figure is the kappa of the two stored snapshots, recomputed here from the files.
    value, _ = Snapshot.load(second.path).agreement(Snapshot.load(first.path))
    assert meta2["kappa_previous"] == round(value, 4) and -1 <= value < 1
    assert second.summary()["kappa_previous"] == meta2["kappa_previous"]
    assert [h["version"] for h in Registry(tmp_path).history("7")] == [first.name, second.name]


def test_a_run_on_the_serving_versions_own_labels_promotes_nothing(tmp_path):
    """Six forged Start Trainings promoted six copies and pruned every earlier version away."""
    texts, labels = TEXTS[:60], LABELS[:60]
    first = _train(tmp_path, texts, labels).version
    again = _train(tmp_path, texts[::-1], labels[::-1], serving=first)  # the same set, in any order
    assert again.version is None and again.decision.startswith(f"kept {first.name}: it was trained on these same")
    assert [v.name for v in Registry(tmp_path).versions("7")] == [first.name]
    changed = list(labels)
    changed[0] = "ok" if changed[0] == "xenófobo" else "xenófobo"
    assert _train(tmp_path, texts, changed, serving=first).version is not None
