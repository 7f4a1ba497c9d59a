"""The linear kind: character n-gram TF-IDF and a class-balanced logistic regression (scikit-learn).

Chosen by measurement on the real tweets (docs/active-learning.md): with margin sampling it reaches in about
100 labels what the fine-tuned MiniLM does not reach in 300, trains in well under a second and scores
thousands of tweets in a fraction of one, so the loop can retrain after every batch of annotations.
The n-gram vocabulary is learned from every text of the project, labeled or not (the unlabeled tweets are
there anyway); the weights only from the labels. Stored as JSON and numpy arrays: loading runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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


# Fitted vectorizers by (options, texts): read-only once fitted, so runs and folds can share them.
_VOCABULARIES: dict[tuple, TfidfVectorizer] = {}


def _vectorizer(ngram_range: tuple[int, int], vocabulary: list[str] | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True, vocabulary=vocabulary)


def _features(vectorizer: TfidfVectorizer, prepared: list[str]) -> Any:
    """The TF-IDF rows of prepared texts: taken from the fit's own rows when it holds every one of them."""
    kept: tuple[dict[str, int], Any] | None = getattr(vectorizer, "rows_", None)
    if kept is not None and all(t in kept[0] for t in prepared):
        index, matrix = kept
        return matrix[[index[t] for t in prepared]]
    return vectorizer.transform(prepared)


@dataclass
class LinearConfig:
    # docs/active-learning.md: C 1 and 3 measure the same, 10 and 30 worse below 100 labels.
    c: float = 3.0
    ngram_range: tuple[int, int] = (2, 5)
    normalize: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> LinearConfig:
        return cls(normalize=settings.normalize_tweets)


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

    @staticmethod
    def vocabulary(texts: Sequence[str], config: LinearConfig) -> TfidfVectorizer:
        """The n-gram vocabulary and weights of a project: fitted on all its texts, labeled or not. The texts of
        a project change little between two runs (labels move, texts stay), so the last ones are kept."""
        key = (
            config.normalize,
            config.ngram_range,
            hashlib.sha1("\x00".join(sorted(texts)).encode("utf-8", "replace")).digest(),
        )
        if key not in _VOCABULARIES:
            prepare = normalize_tweet if config.normalize else str
            prepared = [prepare(t) for t in texts]
            vectorizer = _vectorizer(config.ngram_range)
            # A run transforms the same texts again and again (folds, held-out part, refit, the unlabeled
            # ones): the rows of the fit are kept, for the newest vocabulary only (they take memory).
            matrix = vectorizer.fit_transform(prepared).tocsr()
            vectorizer.rows_ = ({text: row for row, text in enumerate(prepared)}, matrix)
            for older in _VOCABULARIES.values():
                older.rows_ = None
            _VOCABULARIES[key] = vectorizer
            while len(_VOCABULARIES) > 4:
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
        model.fit(_features(vectorizer, [prepare(t) for t in texts]), list(labels))
        return cls(vectorizer=vectorizer, model=model, labels=tuple(classes), normalize=config.normalize)

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
        scores = self.model.decision_function(_features(self.vectorizer, [prepare(t) for t in texts]))
        # Two classes: one score, for scikit-learn's second class; as logits, [0, score].
        logits = np.column_stack([np.zeros(len(scores)), scores]) if scores.ndim == 1 else scores
        # Columns in the order of `labels`, whatever order scikit-learn sorted the classes in.
        return logits[:, [list(self.model.classes_).index(name) for name in self.labels]]

    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return calibration.softmax(self.predict_logits(texts), self.temperature).astype(np.float32)
