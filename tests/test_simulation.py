"""`python -m backend simulate` on the demo tweets: the worker's training per batch, curves, files, labels saved."""

import json

import pytest

from backend.cli import main
from backend.models import linear
from backend.models.preprocess import normalize_tweet
from backend.settings import Settings
from backend.simulation import SimulationConfig, labels_to_reach, simulate, summary
from tests.helpers import CONFIG, DEMO, read_demo


@pytest.mark.slow
def test_a_small_simulation_writes_curves_table_and_chart(tmp_path):
    config = SimulationConfig(
        strategies=["margin", "random"],
        kinds=["linear"],
        batch=10,
        start=10,
        max_labels=40,
        seeds=2,
        report_at=[20, 40],
    )
    report = simulate(
        read_demo("tweets_labeled.csv"),
        None,
        CONFIG.classes,
        config=config,
        settings=Settings(),
        out=tmp_path,
        progress=False,
    )
    assert len(report["seeds"]) == 2 and report["metric"] == "f1:xenófobo"
    for seed in report["seeds"]:
        for strategy in ("margin", "random"):
            assert list(seed["curves"][strategy]) == ["10", "20", "30", "40"]
        assert 0 < seed["full_pool"] <= 1
        calibrated = seed["calibration"]["margin"]["40"]
        assert calibrated["temperature"] > 0 and 0 <= calibrated["ece_calibrated"] <= 1
    # Both strategies start from the same random labels: the same first point.
    first = [(s["curves"]["margin"]["10"], s["curves"]["random"]["10"]) for s in report["seeds"]]
    assert all(a == b for a, b in first)
    assert {p.name for p in tmp_path.iterdir()} >= {"curves.json", "table.csv", "learning_curve.html"}
    assert json.loads((tmp_path / "curves.json").read_text())["summary"] == report["summary"]
    assert "plotly" in (tmp_path / "learning_curve.html").read_text()[:5000].lower()


def test_summary_means_and_labels_to_reach():
    report = {
        "config": {"strategies": ["margin"]},
        "seeds": [
            {"full_pool": 0.8, "curves": {"margin": {"10": None, "20": 0.5, "30": 0.79}}},
            {"full_pool": 0.8, "curves": {"margin": {"10": 0.2, "20": 0.6, "30": 0.7}}},
        ],
    }
    result = summary(report)
    rows = {r["labels"]: r for r in result["table"]}
    assert rows[10]["mean"] == pytest.approx(0.1) and rows[20]["mean"] == pytest.approx(0.55)
    assert rows[20]["se"] == pytest.approx(0.05)
    assert labels_to_reach({"10": None, "20": 0.5, "30": 0.79}, 0.784) == 30
    assert result["labels_to_98_percent"]["margin"] == {"per_seed": [30, None], "median": None}


def test_the_command_refuses_unknown_strategies(tmp_path):
    with pytest.raises(SystemExit, match="strategies"):
        main(["simulate", "--pool", str(DEMO / "tweets_labeled.csv"), "--strategies", "oracle", "--out", str(tmp_path)])


def test_the_projects_other_tweets_shape_the_vocabulary_and_are_never_picked(tmp_path):
    rows = read_demo("tweets_labeled.csv")
    test_rows, pool_rows = rows[:40], rows[40:]
    # A test tweet passed among them stays out: it would shape the features it is tested with.
    other = ["un tuit del proyecto que nadie etiquetó zzqxw", test_rows[0]["text"]]
    report = simulate(
        pool_rows,
        test_rows,
        CONFIG.classes,
        config=SimulationConfig(strategies=["margin"], kinds=["linear"], max_labels=20, seeds=1, report_at=[20]),
        settings=Settings(),
        progress=False,
        unlabeled=other,
    )
    assert list(report["seeds"][0]["curves"]["margin"]) == ["10", "20"]
    newest = list(linear._VOCABULARIES.values())[-1]
    assert normalize_tweet(other[0]) in newest.rows_[0] and "zzqxw" in " ".join(newest.vocabulary_)
    assert normalize_tweet(other[1]) not in newest.rows_[0]


def test_a_test_set_without_a_class_is_refused_with_its_name(tmp_path):
    only_ok = tmp_path / "test.csv"
    only_ok.write_text("text,label\n" + "".join(f'"{i}",ok\n' for i in range(20)), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"test set has no tweet labeled \['xenófobo'\]"):
        main(["simulate", "--pool", str(DEMO / "tweets_labeled.csv"), "--test", str(only_ok), "--out", str(tmp_path)])


def test_pool_tweets_that_are_also_test_tweets_are_left_out_of_the_pool(caplog):
    rows = read_demo("tweets_labeled.csv")
    test_rows = rows[:40]
    report = simulate(
        rows,  # the test tweets among them
        test_rows,
        CONFIG.classes,
        config=SimulationConfig(strategies=["margin"], kinds=["linear"], max_labels=10, seeds=1, report_at=[10]),
        settings=Settings(),
        progress=False,
    )
    tested = {r["text"] for r in test_rows}
    assert report["seeds"][0]["pool"] == sum(1 for r in rows if r["text"] not in tested) == len(rows) - 40
    assert "also in the test set" in caplog.text
