"""Labels in, the better model stored and promoted: check -> split -> fit each candidate kind -> evaluate and
calibrate on the same held-out labels -> keep the best -> store.

The same `train_version` serves `python -m backend train`, the retraining worker and `python -m backend
simulate`. The rule (docs/active-learning.md):

- Held-out labels are chosen by a hash of the text, so every run holds out the same tweets (a version trained
  earlier never saw today's held-out part, and duplicates never sit on both sides). When the held-out part has
  fewer than `min_eval_per_class` examples of a class, the linear kind is evaluated by k-fold cross-validation
  instead and a transformer, too costly to cross-validate, is not a candidate (unless it is the only kind).
- Candidates are compared by F1 of the rarest class (macro F1 for more than two classes); ties go to the kind
  listed first in MODEL_KINDS. A kind not trained in this run but serving now competes with the figure stored
  with its version: a fast run promotes nothing when the serving transformer measured better.
- Each candidate's temperature is fitted on its held-out (or out-of-fold) logits; the linear winner is refitted
  on every label (a fraction of a second), the transformer winner is kept as trained.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from .. import calibration
from ..registry import Registry, Version
from ..settings import MODEL_KINDS, Settings
from .base import TextClassifier, check_labels
from .finetune import TrainConfig, fine_tune
from .linear import LinearClassifier, LinearConfig
from .transformer import TransformerClassifier

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.2
MIN_EVAL_PER_CLASS = 4
MAX_FOLDS = 5


@dataclass
class Outcome:
    version: Version | None  # None: nothing promoted (the serving version measured better)
    decision: str
    candidates: list[dict] = field(default_factory=list)


def held_out(texts: Sequence[str], fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """A boolean mask: the texts every run holds out (a hash of the text, so the same ones each time)."""
    buckets = [int(hashlib.sha1(t.strip().lower().encode("utf-8", "replace")).hexdigest()[:8], 16) for t in texts]
    return np.array([b % 1000 < fraction * 1000 for b in buckets], dtype=bool)


def selection_metric(classes: Sequence[str], labels: Sequence[str]) -> str:
    """ "f1:<rarest class>" for two classes, "f1_macro" for more. `labels`: the project's labels and, since
    uncertainty sampling makes the labels more balanced than the project, the classes predicted for the rest."""
    if len(classes) != 2:
        return "f1_macro"
    counts = Counter(labels)
    return f"f1:{min(classes, key=lambda c: (counts.get(c, 0), list(classes).index(c)))}"


def score_of(metrics: dict, metric: str) -> float | None:
    if not metrics:
        return None
    if metric == "f1_macro":
        return metrics.get("f1_macro")
    return (metrics.get("f1") or {}).get(metric.split(":", 1)[1])


def figures(classes: Sequence[str], labels: Sequence[str], logits: np.ndarray) -> dict:
    """Held-out (or out-of-fold) figures of one candidate: F1 per class, macro F1, calibration."""
    y = np.array([list(classes).index(c) for c in labels])
    predicted = logits.argmax(axis=1)
    per_class = f1_score(y, predicted, labels=range(len(classes)), average=None, zero_division=0)
    return {
        "n": len(labels),
        "accuracy": round(float((predicted == y).mean()), 4),
        "f1_macro": round(float(np.mean(per_class)), 4),
        "f1": {name: round(float(f), 4) for name, f in zip(classes, per_class, strict=True)},
        "calibration": calibration.calibration_report(logits, y),
    }


def train_version(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    kinds: Sequence[str],
    settings: Settings,
    registry: Registry,
    scope: str,
    unlabeled: Sequence[str] = (),
    warm_from: Version | None = None,
    serving: Version | None = None,
    train_config: TrainConfig | None = None,
    callbacks: Sequence = (),
) -> Outcome:
    """Train every kind in `kinds` on (texts, labels), keep the best (against `serving` too, when its kind is
    not retrained here), store and promote it. `unlabeled`: the project's other texts (n-gram vocabulary);
    `warm_from`: a transformer version to fine-tune from instead of MODEL_NAME."""
    classes, texts, labels = list(classes), list(texts), list(labels)
    counts = check_labels(labels, classes, 2)
    mask = held_out(texts)
    eval_counts = Counter(y for y, m in zip(labels, mask, strict=True) if m)
    has_holdout = all(eval_counts.get(c, 0) >= MIN_EVAL_PER_CLASS for c in classes) and not mask.all()
    train_x = [t for t, m in zip(texts, mask, strict=True) if not m or not has_holdout]
    train_y = [y for y, m in zip(labels, mask, strict=True) if not m or not has_holdout]
    eval_x = [t for t, m in zip(texts, mask, strict=True) if m and has_holdout]
    eval_y = [y for y, m in zip(labels, mask, strict=True) if m and has_holdout]

    trained: list[tuple[dict, TextClassifier | None]] = []
    for kind in kinds:
        started = time.time()
        if kind == LinearClassifier.kind:
            config = LinearConfig.from_settings(settings)
            vocabulary = LinearClassifier.vocabulary([*texts, *unlabeled], config)
            if has_holdout:
                model = LinearClassifier.fit(train_x, train_y, classes, config=config, vectorizer=vocabulary)
                logits, evaluated_on = model.predict_logits(eval_x), f"held-out ({len(eval_y)} labels)"
            else:
                logits, folds = _out_of_fold(texts, labels, classes, config, vocabulary)
                evaluated_on = f"{folds}-fold cross-validation ({len(labels)} labels)"
            # Evaluated on a part; what serves learns from every label (a fraction of a second).
            candidate: TextClassifier | None = LinearClassifier.fit(
                texts, labels, classes, config=config, vectorizer=vocabulary
            )
            fig = figures(classes, eval_y if has_holdout else labels, logits)
        elif kind == TransformerClassifier.kind:
            if not has_holdout and len(kinds) > 1:
                trained.append(({"kind": kind, "skipped": "too few held-out labels to compare it"}, None))
                continue
            config_t = train_config or TrainConfig.from_settings(settings, warm=warm_from is not None, progress=False)
            base = str(warm_from.path) if warm_from else settings.model_name
            model_t, epochs = fine_tune(
                train_x, train_y, classes, base_model=base, config=config_t, callbacks=callbacks
            )
            candidate = model_t
            if has_holdout:
                fig = figures(classes, eval_y, model_t.predict_logits(eval_x))
                evaluated_on = f"held-out ({len(eval_y)} labels)"
            else:
                fig, evaluated_on = {}, "not evaluated (too few labels to hold some out)"
            fig["train_config"] = {**asdict(config_t), "base_model": base, "epochs_run": round(epochs, 2)}
        else:
            raise ValueError(f"unknown model kind {kind!r}; MODEL_KINDS takes {list(MODEL_KINDS)}")
        summary = {
            "kind": kind,
            "evaluated_on": evaluated_on,
            "train_seconds": round(time.time() - started, 2),
            **fig,
        }
        trained.append((summary, candidate))

    contenders = [(s, c) for s, c in trained if c is not None]
    predicted = contenders[0][1].predict_proba(list(unlabeled)).argmax(axis=1) if unlabeled else []
    metric = selection_metric(classes, [*labels, *(classes[i] for i in predicted)])
    for summary, _ in trained:
        summary["score"] = None if "skipped" in summary else score_of(summary, metric)
    best_summary, best = max(
        contenders, key=lambda sc: (-1 if sc[0]["score"] is None else sc[0]["score"], -contenders.index(sc))
    )
    candidates = [s for s, _ in trained]
    incumbent = _incumbent(serving, kinds, metric)
    if incumbent is not None:
        candidates.append(incumbent)
        if best_summary["score"] is not None and incumbent["score"] > best_summary["score"]:
            decision = (
                f"kept {serving.name if serving else '?'} ({incumbent['kind']}, {metric} "
                f"{incumbent['score']:.3f}): the best new candidate, {best_summary['kind']}, measured "
                f"{best_summary['score']:.3f}"
            )
            log.info(decision)
            return Outcome(None, decision, candidates)

    temperature = (best_summary.get("calibration") or {}).get("temperature", 1.0)
    best.temperature = temperature
    others = ", ".join(
        f"{s['kind']} {s['score']:.3f}" for s in candidates if s is not best_summary and s.get("score") is not None
    )
    decision = (
        f"promoted {best_summary['kind']} ({metric} {best_summary['score']:.3f}"
        if best_summary["score"] is not None
        else f"promoted {best_summary['kind']} (not evaluated"
    )
    decision += f"; against {others})" if others else ")"
    version = registry.store(
        scope,
        best,
        {
            "classes": classes,
            "labels_used": len(labels),
            "label_counts": {c: counts.get(c, 0) for c in classes},
            "eval_size": len(eval_y),
            "selection_metric": metric,
            "metrics": {k: best_summary[k] for k in ("n", "accuracy", "f1_macro", "f1") if k in best_summary},
            "temperature": temperature,
            "candidates": candidates,
            "decision": decision,
            "parent": serving.name if serving else None,
            "train_seconds": round(sum(s.get("train_seconds", 0) for s in candidates), 2),
        },
    )
    log.info("%s: %s", version.name, decision)
    return Outcome(version, decision, candidates)


def _out_of_fold(
    texts: list[str], labels: list[str], classes: list[str], config: LinearConfig, vocabulary: TfidfVectorizer
) -> tuple[np.ndarray, int]:
    """Logits of every label from a linear model that did not train on it; (logits, folds). The folds share the
    vocabulary: it comes from texts, never from labels."""
    folds = max(2, min(MAX_FOLDS, min(Counter(labels).values())))
    logits = np.zeros((len(labels), len(classes)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for fit_rows, eval_rows in splitter.split(texts, labels):
        model = LinearClassifier.fit(
            [texts[i] for i in fit_rows], [labels[i] for i in fit_rows], classes, config=config, vectorizer=vocabulary
        )
        logits[eval_rows] = model.predict_logits([texts[i] for i in eval_rows])
    return logits, folds


def _incumbent(serving: Version | None, kinds: Sequence[str], metric: str) -> dict | None:
    """The serving version as a candidate, when its kind is not retrained in this run and it has a figure."""
    if serving is None:
        return None
    meta = serving.metadata
    kind = meta.get("kind", TransformerClassifier.kind)
    score = score_of(meta.get("metrics") or {}, metric)
    if kind in kinds or score is None:
        return None
    return {
        "kind": kind,
        "version": serving.name,
        "score": score,
        "labels_used": meta.get("labels_used"),
        "evaluated_on": f"its own training run ({meta.get('eval_size', '?')} held-out labels)",
    }
