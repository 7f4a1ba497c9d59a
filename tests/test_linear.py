"""The linear kind: fits in the project's class order, stores without pickle, loads back identical; latent
directions of the project's texts fold into the n-gram weights."""

import json
import os
import time

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from backend.models import linear
from backend.models.linear import CONFIG, WEIGHTS, LinearClassifier, LinearConfig
from backend.models.preprocess import normalize_tweet
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


def _with_latent(features, basis, weight):
    return sparse.hstack([features, sparse.csr_matrix(weight * (features @ basis.T))], format="csr")


def _latent_fit(monkeypatch, components=20):
    """A fit with latent directions on the demo's ~400 texts (below LSA_MIN_TEXTS, so lowered here)."""
    monkeypatch.setattr(linear, "LSA_MIN_TEXTS", 100)
    config = LinearConfig(lsa_components=components)
    texts, labels = [r["text"] for r in ROWS], [r["label"] for r in ROWS]
    vocabulary = LinearClassifier.vocabulary([*texts, *pool_texts()], config)
    model = LinearClassifier.fit(texts, labels, ["ok", "xenófobo"], config=config, vectorizer=vocabulary)
    return config, vocabulary, model


def test_latent_directions_fold_into_one_weight_per_ngram(monkeypatch, tmp_path):
    config, vocabulary, model = _latent_fit(monkeypatch)
    assert vocabulary.lsa_.shape == (20, len(vocabulary.vocabulary_))
    texts, labels = [r["text"] for r in ROWS], [r["label"] for r in ROWS]
    # The same logistic regression on the n-grams and their latent coordinates, unfolded.
    unfolded = LogisticRegression(C=config.c, class_weight="balanced", max_iter=3000)
    features = vocabulary.transform([normalize_tweet(t) for t in texts])
    unfolded.fit(_with_latent(features, vocabulary.lsa_, config.lsa_weight), labels)
    others = pool_texts(100)
    expected = unfolded.decision_function(
        _with_latent(vocabulary.transform([normalize_tweet(t) for t in others]), vocabulary.lsa_, config.lsa_weight)
    )
    assert np.allclose(model.predict_logits(others)[:, 1], expected, atol=1e-5)
    assert model.model.coef_.shape == (1, len(vocabulary.vocabulary_))
    # Stored as before: n-gram weights only, and they load back to the same scores.
    model.save(tmp_path)
    loaded = LinearClassifier.load(tmp_path, version="project7-v2")
    assert np.allclose(loaded.predict_logits(others), model.predict_logits(others))


def test_the_latent_part_changes_the_model_and_can_be_turned_off(monkeypatch):
    _, _, latent = _latent_fit(monkeypatch)
    config, plain_vocabulary, plain = _latent_fit(monkeypatch, components=0)
    assert plain_vocabulary.lsa_ is None
    # Fitted on the n-grams its texts have, it is the regression on the whole vocabulary.
    everything = LogisticRegression(C=config.c, class_weight="balanced", max_iter=3000).fit(
        plain_vocabulary.transform([normalize_tweet(r["text"]) for r in ROWS]), [r["label"] for r in ROWS]
    )
    assert np.allclose(plain.model.coef_, everything.coef_, atol=1e-5)
    assert not np.allclose(latent.predict_logits(pool_texts(50)), plain.predict_logits(pool_texts(50)), atol=1e-3)


def test_too_few_texts_for_latent_directions_use_the_ngrams_alone():
    vocabulary = LinearClassifier.vocabulary([*pool_texts(), "otro tuit"], LinearConfig())
    assert len(vocabulary.rows_[0]) < linear.LSA_MIN_TEXTS and vocabulary.lsa_ is None


def test_a_vocabulary_kept_on_disk_serves_another_process_the_same_model(monkeypatch, tmp_path, caplog):
    """RQ forks a process per job: the suspect-score job and the next run read the vocabulary the run before
    them fitted (its latent directions take seconds) instead of fitting it again."""
    monkeypatch.setattr(linear, "LSA_MIN_TEXTS", 100)
    config = LinearConfig(lsa_components=20)
    texts, labels = [r["text"] for r in ROWS], [r["label"] for r in ROWS]
    everything = [*texts, *pool_texts()]
    fitted = LinearClassifier.vocabulary(everything, config, tmp_path)
    (stored,) = tmp_path.glob("v*.npz")
    with np.load(stored, allow_pickle=False) as arrays:  # strings and numbers: nothing runs on load
        assert set(arrays.files) == {"terms", "idf", "lsa"}
    monkeypatch.setattr(linear, "_VOCABULARIES", {})  # another process
    monkeypatch.setattr(linear, "_lsa_basis", lambda *_: pytest.fail("fitted again"))
    loaded = LinearClassifier.vocabulary(everything[::-1], config, tmp_path)  # the same texts, in any order
    assert loaded is not fitted and loaded.vocabulary_ == fitted.vocabulary_
    assert np.array_equal(loaded.lsa_, fitted.lsa_) and np.array_equal(loaded.idf_, fitted.idf_)
    a = LinearClassifier.fit(texts, labels, ["ok", "xenófobo"], config=config, vectorizer=fitted)
    b = LinearClassifier.fit(texts, labels, ["ok", "xenófobo"], config=config, vectorizer=loaded)
    assert np.allclose(a.predict_logits(pool_texts(100)), b.predict_logits(pool_texts(100)))
    # Other options or other texts are another file; a damaged file is fitted again (and replaced).
    monkeypatch.undo()
    monkeypatch.setattr(linear, "LSA_MIN_TEXTS", 100)
    LinearClassifier.vocabulary(everything, LinearConfig(lsa_components=10), tmp_path)
    assert len(list(tmp_path.glob("v*.npz"))) == 2
    stored.write_bytes(b"not a zip")
    monkeypatch.setattr(linear, "_VOCABULARIES", {})
    with caplog.at_level("WARNING"):
        again = LinearClassifier.vocabulary(everything, config, tmp_path)
    assert "unreadable" in caplog.text and np.allclose(again.lsa_, fitted.lsa_, atol=1e-5)
    with np.load(stored, allow_pickle=False) as arrays:
        assert np.array_equal(arrays["lsa"], again.lsa_)
    # What a process killed while writing left is removed by a later write once it is an hour old, not before.
    crashed, writing = tmp_path / ".tmp-crashed.npz", tmp_path / ".tmp-writing.npz"
    crashed.write_bytes(b"half"), writing.write_bytes(b"half")
    os.utime(crashed, (time.time() - 7200, time.time() - 7200))
    LinearClassifier.vocabulary(everything, LinearConfig(lsa_components=5), tmp_path)
    assert not crashed.exists() and writing.exists()
