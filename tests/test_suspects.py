"""Labels that look wrong: out-of-fold ranking on hand-made data."""

from backend.settings import Settings
from backend.suspects import rank_suspects
from tests.helpers import read_demo

SETTINGS = Settings()


def _clean_data():
    ok = [f"qué bonito día en la playa con amigos número {i}" for i in range(12)]
    bad = [f"fuera los inmigrantes de nuestro país ya número {i}" for i in range(12)]
    return ok + bad, ["ok"] * 12 + ["xenófobo"] * 12


def test_a_deliberately_flipped_label_ranks_first():
    texts, labels = _clean_data()
    labels[3] = "xenófobo"  # a day at the beach, labeled xenophobic
    suspects = rank_suspects(texts, labels, ["ok", "xenófobo"], settings=SETTINGS)
    assert suspects and suspects[0].index == 3
    assert suspects[0].label == "xenófobo" and suspects[0].predicted == "ok"
    assert suspects[0].p_label < 0.5


def test_a_flipped_label_among_real_tweets_ranks_near_the_top():
    rows = read_demo("tweets_labeled.csv")
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    # The clearest xenophobic tweet of the set (by the keyword), relabeled ok.
    target = next(i for i, t in enumerate(texts) if labels[i] == "xenófobo" and "inmigrantes" in t.lower())
    labels[target] = "ok"
    suspects = rank_suspects(texts, labels, ["ok", "xenófobo"], settings=SETTINGS, limit=10)
    assert target in [s.index for s in suspects]
    assert [s.p_label for s in suspects] == sorted(s.p_label for s in suspects)


def test_clean_labels_and_too_few_labels_give_no_suspects():
    texts, labels = _clean_data()
    assert rank_suspects(texts, labels, ["ok", "xenófobo"], settings=SETTINGS) == []
    assert rank_suspects(texts[:13], labels[:13], ["ok", "xenófobo"], settings=SETTINGS) == []  # 1 xenófobo
    assert rank_suspects(texts[:12], labels[:12], ["ok", "xenófobo"], settings=SETTINGS) == []  # one class
    assert rank_suspects(texts, labels, ["ok"], settings=SETTINGS) == []
