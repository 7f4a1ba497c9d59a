"""The linear kind: fits in the project's class order, stores without pickle, loads back identical."""

import json

import numpy as np

from backend.models.linear import CONFIG, WEIGHTS, LinearClassifier, LinearConfig
from tests.helpers import pool_texts, read_demo

ROWS = read_demo("tweets_labeled.csv")


def _fit(classes):
    return LinearClassifier.fit(
        [r["text"] for r in ROWS], [r["label"] for r in ROWS], classes, config=LinearConfig(), unlabeled=pool_texts()
    )


def test_columns_follow_the_classes_given_whatever_their_order():
    a, b = _fit(["ok", "xenófobo"]), _fit(["xenófobo", "ok"])
    texts = pool_texts(50)
    assert np.allclose(a.predict_proba(texts), b.predict_proba(texts)[:, ::-1], atol=1e-6)
    assert a.labels == ("ok", "xenófobo") and b.labels == ("xenófobo", "ok")


def test_it_learns_the_training_labels():
    model = _fit(["ok", "xenófobo"])
    predicted = [model.labels[i] for i in model.predict_proba([r["text"] for r in ROWS]).argmax(1)]
    assert np.mean([p == r["label"] for p, r in zip(predicted, ROWS, strict=True)]) > 0.9


def test_a_saved_version_loads_back_identical_from_json_and_plain_arrays(tmp_path):
    model = _fit(["ok", "xenófobo"])
    model.save(tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["labels"] == ["ok", "xenófobo"]
    with np.load(tmp_path / WEIGHTS, allow_pickle=False) as arrays:  # no object arrays: nothing runs on load
        assert set(arrays.files) == {"idf", "coef", "intercept"}
    loaded = LinearClassifier.load(tmp_path, version="project7-v1", temperature=0.5)
    texts = pool_texts(100)
    assert np.allclose(loaded.predict_logits(texts), model.predict_logits(texts))
    assert loaded.version == "project7-v1" and loaded.serves(["xenófobo", "ok"]) and not loaded.serves(["ok"])
    sharper = loaded.predict_proba(texts)
    assert (np.abs(sharper[:, 0] - 0.5) >= np.abs(model.predict_proba(texts)[:, 0] - 0.5) - 1e-6).all()


def test_the_fit_rows_kept_give_what_a_fresh_transform_gives():
    texts, labels = [r["text"] for r in ROWS], [r["label"] for r in ROWS]
    vocabulary = LinearClassifier.vocabulary([*texts, *pool_texts()], LinearConfig())
    assert vocabulary.rows_ is not None
    kept = LinearClassifier.fit(texts, labels, ["ok", "xenófobo"], config=LinearConfig(), vectorizer=vocabulary)
    rows, vocabulary.rows_ = vocabulary.rows_, None
    try:
        fresh = LinearClassifier.fit(texts, labels, ["ok", "xenófobo"], config=LinearConfig(), vectorizer=vocabulary)
        assert np.allclose(kept.model.coef_, fresh.model.coef_)
        assert np.allclose(kept.predict_logits(pool_texts(100)), fresh.predict_logits(pool_texts(100)))
    finally:
        vocabulary.rows_ = rows
    # A text outside the vocabulary's texts is transformed, not looked up.
    assert kept.predict_logits(["un tuit que nadie escribió"]).shape == (1, 2)
    newer = LinearClassifier.vocabulary(texts[:50], LinearConfig())
    assert newer.rows_ is not None and vocabulary.rows_ is None  # the rows of the newest vocabulary only
