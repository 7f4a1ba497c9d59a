"""The linear kind: character n-gram TF-IDF and a class-balanced logistic regression (scikit-learn).

Chosen by measurement on the real tweets (docs/active-learning.md): with margin sampling it reaches in about
100 labels what the fine-tuned MiniLM does not reach in 300, trains in well under a second and scores
thousands of tweets in a fraction of one, so the loop can retrain after every batch of annotations.
The n-gram vocabulary is learned from every text of the project, labeled or not (the unlabeled tweets are
there anyway), and so are latent directions of those n-grams (LSA: a truncated SVD of the texts' TF-IDF rows);
the weights only from the labels, on the n-grams and their latent coordinates. The latent part is linear in
the n-grams, so it folds into one weight per n-gram: the stored model is a plain linear model over the
vocabulary. Stored as JSON and numpy arrays: loading runs no code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from .. import calibration
from . import base
from .preprocess import normalize_tweet

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

WEIGHTS = "linear.npz"
CONFIG = "linear.json"


# Fitted vectorizers by (options, texts): read-only once fitted, so runs and folds can share them. Two: each
# holds its latent directions (tens of MB for thousands of tweets), and a run uses one.
_VOCABULARIES: dict[tuple, TfidfVectorizer] = {}
_KEEP_VOCABULARIES = 2
# And on disk, in a `cache` folder (Registry.vocabularies: MODEL_DIR/.vocabularies), for the processes that cannot share
# memory: RQ forks a process per job, and fitting the latent directions takes seconds (about 4 of a fast run's 8
# for 3,000 tweets, docs/benchmarks.md), for texts that stay the same from run to run. Arrays and JSON-like
# strings only, so loading runs no code. The newest few files are kept; the format number names the recipe.
_DISK_FORMAT = 1
_KEEP_ON_DISK = 8

# Latent directions need many texts to mean something: with the 1,088 texts of a simulation pool alone they
# made margin sampling worse (-.01 F1 at 50-200 labels), with 3,374 (the pool and other tweets of the same
# source) better (+.07 at 50, +.03 at 300, level at 150-200); with 2,000, +.07 at 50 and within about one
# standard error from 100 on (docs/active-learning.md). Below LSA_MIN_TEXTS texts: the n-grams alone. Fewer
# directions for fewer texts (one per 20) helped the first 50 labels only, and lifted random sampling so much
# that the uncertainty queue saved few labels after those (docs: "Fewer directions for fewer texts").
LSA_MIN_TEXTS = 2_000
# The directions are fitted on at most this many texts (a fixed sample): seconds, whatever the project's size.
LSA_MAX_TEXTS = 5_000


def _vectorizer(ngram_range: tuple[int, int], vocabulary: list[str] | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True, vocabulary=vocabulary)


def _features(vectorizer: TfidfVectorizer, prepared: list[str]) -> Any:
    """The TF-IDF rows of prepared texts: taken from the fit's own rows when it holds every one of them."""
    kept: tuple[dict[str, int], Any] | None = getattr(vectorizer, "rows_", None)
    if kept is not None and all(t in kept[0] for t in prepared):
        index, matrix = kept
        return matrix[[index[t] for t in prepared]]
    return vectorizer.transform(prepared)


def _lsa_basis(matrix: Any, components: int) -> np.ndarray | None:
    """(components, vocabulary) latent directions of the texts' TF-IDF rows; None for too few texts."""
    rows = matrix.shape[0]
    if not components or rows < LSA_MIN_TEXTS:
        return None
    if rows > LSA_MAX_TEXTS:
        matrix = matrix[np.sort(np.random.default_rng(0).choice(rows, LSA_MAX_TEXTS, replace=False))]
    svd = TruncatedSVD(min(components, matrix.shape[1] - 1), random_state=0)
    return svd.fit(matrix).components_.astype(np.float32)


def save_vocabulary(path: Path, vectorizer: TfidfVectorizer) -> None:
    """Written whole or not at all (another worker may read it meanwhile); a failure only costs the next fit."""
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    arrays = {"terms": np.array(terms, dtype=str), "idf": vectorizer.idf_}
    if vectorizer.lsa_ is not None:
        arrays["lsa"] = vectorizer.lsa_
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False) as handle:
            np.savez(handle, **arrays)
        os.chmod(handle.name, 0o644)  # as other files of MODEL_DIR (a temporary file is the owner's alone)
        os.replace(handle.name, path)
        for old in sorted(path.parent.glob("v*.npz"), key=lambda p: p.stat().st_mtime)[:-_KEEP_ON_DISK]:
            old.unlink(missing_ok=True)
        # Left by a process killed while writing (30 MB each for 3,000 tweets); an hour is past any write.
        for stale in path.parent.glob(".tmp-*.npz"):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        if handle is not None:
            Path(handle.name).unlink(missing_ok=True)
        log.warning("vocabulary not kept in %s (%s): the next process fits it again", path.parent, exc)


def load_vocabulary(path: Path, config: LinearConfig) -> TfidfVectorizer | None:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            vectorizer = _vectorizer(config.ngram_range, vocabulary=arrays["terms"].tolist())
            vectorizer.idf_ = arrays["idf"]
            vectorizer.lsa_ = arrays["lsa"] if "lsa" in arrays.files else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:  # a damaged file: fitted again, and replaced
        log.warning("vocabulary %s unreadable (%s): fitting it again", path, exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # the newest are kept
    return vectorizer


def fit_vocabulary(prepared: Sequence[str], config: LinearConfig) -> tuple[TfidfVectorizer, Any]:
    """(vocabulary with its latent directions, the TF-IDF rows of `prepared`) fitted on prepared texts."""
    vectorizer = _vectorizer(config.ngram_range)
    matrix = vectorizer.fit_transform(prepared).tocsr()
    vectorizer.lsa_ = _lsa_basis(matrix, config.lsa_components)
    return vectorizer, matrix


def with_rows(vectorizer: TfidfVectorizer, texts: Sequence[str], config: LinearConfig) -> TfidfVectorizer:
    """`vectorizer` holding the TF-IDF rows of `texts`, which fitting and predicting then take instead of
    transforming them again (a run's folds, held-out part and refit read the same labeled texts)."""
    prepare = normalize_tweet if config.normalize else str
    prepared = list(dict.fromkeys(prepare(t) for t in texts))
    vectorizer.rows_ = ({text: row for row, text in enumerate(prepared)}, vectorizer.transform(prepared).tocsr())
    return vectorizer


@dataclass
class LinearConfig:
    # docs/active-learning.md: C 1 and 3 measure the same, 10 and 30 worse below 100 labels.
    c: float = 3.0
    ngram_range: tuple[int, int] = (2, 5)
    normalize: bool = True
    # Latent directions (0: none) and the scale of their coordinates beside the n-grams'. 100 and 3: the best
    # of 100/200/300 directions and scales 3/5 on 10 seeds; 50-150 and 2-4 gained alike on 10 others.
    lsa_components: int = 100
    lsa_weight: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LinearConfig:
        return cls(normalize=settings.normalize_tweets, lsa_components=settings.linear_lsa_components)


@dataclass
class LinearClassifier:
    kind = "linear"

    vectorizer: TfidfVectorizer
    model: LogisticRegression
    labels: tuple[str, ...]
    version: str = "candidate"
    normalize: bool = True
    temperature: float = 1.0
    trained: bool = True
    extra: dict = field(default_factory=dict)
    # The id of the vocabulary it was fitted under, when that is a project pool's (retraining.pool): the pool's
    # cached rows then score it without reading a text.
    vocabulary_id: str | None = None

    @staticmethod
    def vocabulary(texts: Sequence[str], config: LinearConfig, cache: Path | None = None) -> TfidfVectorizer:
        """The n-gram vocabulary and weights of a project: fitted on all its texts, labeled or not. The texts of
        a project change little between two runs (labels move, texts stay), so the last ones are kept, in memory
        and, with `cache`, in that folder."""
        key = (
            config.normalize,
            config.ngram_range,
            config.lsa_components,
            hashlib.sha1("\x00".join(sorted(texts)).encode("utf-8", "replace")).digest(),
        )
        if key not in _VOCABULARIES:
            prepare = normalize_tweet if config.normalize else str
            prepared = [prepare(t) for t in texts]
            stored = (
                cache / f"v{_DISK_FORMAT}-{hashlib.sha1(repr(key).encode()).hexdigest()[:24]}.npz" if cache else None
            )
            vectorizer = load_vocabulary(stored, config) if stored else None
            if vectorizer is None:
                vectorizer, matrix = fit_vocabulary(prepared, config)
                if stored:
                    save_vocabulary(stored, vectorizer)
            else:
                matrix = vectorizer.transform(prepared).tocsr()
            # A run transforms the same texts again and again (folds, held-out part, refit, the unlabeled
            # ones): the rows are kept, for the newest vocabulary only (they take memory).
            vectorizer.rows_ = ({text: row for row, text in enumerate(prepared)}, matrix)
            for older in _VOCABULARIES.values():
                older.rows_ = None
            _VOCABULARIES[key] = vectorizer
            while len(_VOCABULARIES) > _KEEP_VOCABULARIES:
                del _VOCABULARIES[next(iter(_VOCABULARIES))]
        return _VOCABULARIES[key]

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        classes: Sequence[str],
        *,
        config: LinearConfig,
        unlabeled: Sequence[str] = (),
        vectorizer: TfidfVectorizer | None = None,
    ) -> LinearClassifier:
        """`vectorizer`: a vocabulary already fitted (cross-validation folds share one); else one is fitted on
        `texts` and `unlabeled`."""
        vectorizer = vectorizer or cls.vocabulary([*texts, *unlabeled], config)
        prepare = normalize_tweet if config.normalize else str
        # lbfgs, not liblinear: liblinear fits 10x faster here but reached .786 against .809 F1(xenófobo) at
        # 100 margin-chosen labels (5 seeds, docs/active-learning.md); a fit takes ~0.15 s either way is fine.
        model = LogisticRegression(C=config.c, class_weight="balanced", max_iter=3000)
        features = _features(vectorizer, [prepare(t) for t in texts]).tocsr()
        # An n-gram absent from every training text gets weight 0 at the optimum (only the L2 penalty touches
        # it): fitting on the n-grams present (a few thousand of ~100,000) gives the same model, with fewer
        # weights to optimize.
        present = np.unique(features.indices)
        columns = [features[:, present]]
        basis: np.ndarray | None = getattr(vectorizer, "lsa_", None)
        if basis is not None:
            columns.append(sparse.csr_matrix(config.lsa_weight * (columns[0] @ basis[:, present].T)))
        model.fit(sparse.hstack(columns, format="csr"), list(labels))
        coef = np.zeros((model.coef_.shape[0], features.shape[1]))
        coef[:, present] = model.coef_[:, : len(present)]
        if basis is not None:
            # Scores are linear in the latent coordinates, which are linear in the n-grams: their weights fold
            # into the n-grams' (w + weight * v @ basis), so serving and storage see the n-grams only.
            coef += config.lsa_weight * (model.coef_[:, len(present) :] @ basis)
        model.coef_, model.n_features_in_ = coef, features.shape[1]
        return cls(
            vectorizer=vectorizer,
            model=model,
            labels=tuple(classes),
            normalize=config.normalize,
            vocabulary_id=getattr(vectorizer, "id_", None),
        )

    @classmethod
    def load(cls, source: str | Path, *, version: str, temperature: float = 1.0, **_: Any) -> LinearClassifier:
        folder = Path(source)
        meta = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        with np.load(folder / WEIGHTS, allow_pickle=False) as arrays:
            vectorizer = _vectorizer(tuple(meta["ngram_range"]), vocabulary=meta["vocabulary"])
            vectorizer.idf_ = arrays["idf"]
            model = LogisticRegression()
            model.classes_ = np.array(meta["sklearn_classes"])
            model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        return cls(
            vectorizer=vectorizer,
            model=model,
            labels=tuple(meta["labels"]),
            version=version,
            normalize=meta["normalize"],
            temperature=temperature,
            vocabulary_id=meta.get("vocabulary_id"),
        )

    def save(self, folder: Path) -> None:
        # Plain JSON and arrays (no pickle): loading a version runs no code, and takes milliseconds.
        terms = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.__getitem__)
        meta = {
            "labels": list(self.labels),
            "normalize": self.normalize,
            "ngram_range": list(self.vectorizer.ngram_range),
            "sklearn_classes": list(self.model.classes_),
            "vocabulary": terms,
            "vocabulary_id": self.vocabulary_id,
        }
        (folder / CONFIG).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        with (folder / WEIGHTS).open("wb") as handle:
            np.savez(handle, idf=self.vectorizer.idf_, coef=self.model.coef_, intercept=self.model.intercept_)

    def serves(self, classes: Sequence[str]) -> bool:
        return base.serves(self.labels, self.trained, classes)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)))
        prepare = normalize_tweet if self.normalize else str
        return self._logits(self.model.decision_function(_features(self.vectorizer, [prepare(t) for t in texts])))

    def logits_of(self, product: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Logits from `product(weights)`: X @ weights for X the TF-IDF rows of some texts under this model's
        vocabulary (a project pool's cached rows: no text is read or transformed)."""
        scores = product(self.model.coef_.T.astype(np.float32)) + self.model.intercept_
        return self._logits(scores.ravel() if scores.shape[1] == 1 else scores)

    def _logits(self, scores: np.ndarray) -> np.ndarray:
        # Two classes: one score, for scikit-learn's second class; as logits, [0, score].
        logits = np.column_stack([np.zeros(len(scores)), scores]) if scores.ndim == 1 else scores
        # Columns in the order of `labels`, whatever order scikit-learn sorted the classes in.
        return logits[:, [list(self.model.classes_).index(name) for name in self.labels]]

    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return calibration.softmax(self.predict_logits(texts), self.temperature).astype(np.float32)


def project_vocabulary(
    texts: Sequence[str], unlabeled: Sequence[str] | base.Unlabeled, config: LinearConfig, cache: Path | None
) -> TfidfVectorizer:
    """The vocabulary a run fits under: the pool's when `unlabeled` is a pool that has one (its versions then score
    the pool's cached rows), else one fitted on `texts` and the unlabeled texts."""
    pool = base.as_pool(unlabeled)
    if pool is not None and pool.vocabulary is not None:
        return with_rows(pool.vocabulary, texts, config)
    others = pool.texts() if pool is not None else list(unlabeled)  # type: ignore[arg-type]
    return LinearClassifier.vocabulary([*texts, *others], config, cache)
