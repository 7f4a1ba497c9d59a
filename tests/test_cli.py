import csv
import subprocess
import sys

import pytest

from backend.scoring import score_csv
from backend.settings import Settings
from tests.conftest import DEMO, ROOT


def _rows(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_offline_scoring_writes_the_notebook_table_sorted_by_margin(settings, tmp_path):
    out = tmp_path / "scored.csv"
    written = score_csv(DEMO / "tweets_pool.csv", out, settings)
    rows = _rows(out)
    assert written == len(rows) == len(_rows(DEMO / "tweets_pool.csv"))
    assert list(rows[0]) == ["id", "text", "p_ok", "p_xenófobo", "margin", "label"]
    margins = [float(r["margin"]) for r in rows]
    assert margins == sorted(margins)
    for r in rows:
        p_ok, p_x = float(r["p_ok"]), float(r["p_xenófobo"])
        assert p_ok + p_x == pytest.approx(1, abs=1e-5)
        assert float(r["margin"]) == pytest.approx(abs(p_ok - p_x), abs=1e-5)
        assert r["label"] == ("ok" if p_ok >= p_x else "xenófobo")

    # Between two written (rounded) margins, so rounding cannot move a row across the threshold.
    threshold = (margins[9] + margins[10]) / 2
    kept = score_csv(DEMO / "tweets_pool.csv", tmp_path / "uncertain.csv", settings, threshold=threshold)
    assert kept == sum(m <= threshold for m in margins) and kept >= 10


def test_cli_reports_clear_errors(trained_model_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tweet\n1,hola\n")
    env = {"MODEL_DIR": str(trained_model_dir), "HF_HUB_OFFLINE": "1", "PATH": ""}
    for args, message in [
        (["predict", "--csv", str(bad), "--out", str(tmp_path / "o.csv")], "no `text` column"),
        (["train", "--csv", str(bad)], "lacks column(s) ['text', 'label']"),
        (["train", "--csv", str(DEMO / "tweets_pool.csv")], "lacks column(s) ['label']"),
    ]:
        run = subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode != 0 and message in run.stderr, run.stderr


def test_too_few_labels_is_refused_with_counts(tmp_path):
    from backend.errors import NoTrainingData
    from backend.registry import Registry
    from backend.training import train_version

    with pytest.raises(NoTrainingData, match=r"xenófobo.: 1"):
        train_version(["a", "b", "c"], ["ok", "ok", "xenófobo"], ["ok", "xenófobo"],
                      base_model=Settings().model_name, registry=Registry(tmp_path), scope="default")
    assert Registry(tmp_path).current("default") is None


def test_rollback_serves_an_earlier_version(tmp_path):
    from backend.registry import Registry

    registry = Registry(tmp_path)
    for _ in range(2):
        with registry.stage("4") as staged:
            (staged / "weights.bin").write_text("w")
            registry.promote("4", staged, {})
    env = {"MODEL_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "backend", "rollback", "--project", "4", "--to", "project4-v1",
                           "--no-rescore"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert registry.current("4").name == "project4-v1"
    missing = subprocess.run([sys.executable, "-m", "backend", "rollback", "--project", "4", "--to", "project4-v9"],
                             cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no version 'project4-v9'" in missing.stderr
