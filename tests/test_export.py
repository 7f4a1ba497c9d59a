"""The notebook's table from a CSV, scored by the default version: sorted, complete, thresholded."""

import pytest

from backend.export import score_csv
from backend.tables import read_csv
from tests.helpers import DEMO


@pytest.mark.slow
def test_offline_scoring_writes_the_notebook_table_sorted_by_margin(settings, tmp_path):
    out = tmp_path / "scored.csv"
    written = score_csv(DEMO / "tweets_pool.csv", out, settings)
    rows = read_csv(out)
    assert written == len(rows) == len(read_csv(DEMO / "tweets_pool.csv"))
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


def test_the_table_ranks_by_the_configured_strategy(settings, tmp_path):
    entropy = settings.model_copy(update={"uncertainty": "entropy"})
    out = tmp_path / "entropy.json"
    score_csv(DEMO / "tweets_pool.csv", out, entropy)
    import json

    rows = json.loads(out.read_text(encoding="utf-8"))
    assert list(rows[0]) == ["id", "text", "p_ok", "p_xenófobo", "margin", "entropy", "label"]
    scores = [r["entropy"] for r in rows]
    assert scores == sorted(scores) and scores[0] < scores[-1]


def test_a_csv_without_text_is_refused_by_name(settings, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tweet\n1,hola\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['text'\]"):
        score_csv(bad, tmp_path / "out.csv", settings)
