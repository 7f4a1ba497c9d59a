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
- Each candidate's temperature is fitted on its held-out (or out-of-fold) logits; the linear kind's on the
  out-of-fold logits of every label while the held-out part has fewer than MIN_CALIBRATION_LABELS (more labels,
  a steadier T). The linear winner is refitted on every label (a fraction of a second), the transformer winner
  is kept as trained.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from .. import calibration
from ..registry import Registry, Version
from ..settings import MODEL_KINDS, Settings
from ..stopping import Snapshot
from .base import Unlabeled, as_pool, check_labels, probabilities
from .finetune import TrainConfig, fine_tune
from .linear import LinearClassifier, LinearConfig, project_vocabulary
from .transformer import TransformerClassifier

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.2
MIN_EVAL_PER_CLASS = 4
MAX_FOLDS = 5
MIN_CALIBRATION_LABELS = 100


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


def figures(
    classes: Sequence[str],
    labels: Sequence[str],
    logits: np.ndarray,
    calibrate_on: tuple[np.ndarray, Sequence[str]] | None = None,
) -> dict:
    """Held-out (or out-of-fold) figures of one candidate: F1 per class, macro F1, and calibration, fitted on
    `calibrate_on` (logits, labels) when given, else on the same logits."""
    y = np.array([list(classes).index(c) for c in labels])
    fit_logits, fit_labels = calibrate_on if calibrate_on is not None else (logits, labels)
    predicted = logits.argmax(axis=1)
    per_class = f1_score(y, predicted, labels=range(len(classes)), average=None, zero_division=0)
    return {
        "n": len(labels),
        "accuracy": round(float((predicted == y).mean()), 4),
        "f1_macro": round(float(np.mean(per_class)), 4),
        "f1": {name: round(float(f), 4) for name, f in zip(classes, per_class, strict=True)},
        "calibration": {
            **calibration.calibration_report(fit_logits, np.array([list(classes).index(c) for c in fit_labels])),
            "fitted_on": len(fit_labels),
        },
    }


@dataclass
class _Split:
    """Every label, and its parts: trained on, held out (empty when too few to hold some out)."""

    texts: list[str]
    labels: list[str]
    train_x: list[str]
    train_y: list[str]
    eval_x: list[str]
    eval_y: list[str]

    @classmethod
    def of(cls, texts: list[str], labels: list[str], classes: Sequence[str]) -> _Split:
        mask = held_out(texts)
        counts = Counter(y for y, m in zip(labels, mask, strict=True) if m)
        if mask.all() or any(counts.get(c, 0) < MIN_EVAL_PER_CLASS for c in classes):
            return cls(texts, labels, texts, labels, [], [])
        pairs = list(zip(texts, labels, mask, strict=True))
        return cls(
            texts,
            labels,
            [t for t, _, m in pairs if not m],
            [y for _, y, m in pairs if not m],
            [t for t, _, m in pairs if m],
            [y for _, y, m in pairs if m],
        )


def _linear(
    split: _Split, classes: list[str], settings: Settings, unlabeled: Sequence[str] | Unlabeled, cache: Path
) -> tuple[dict, Any]:
    config = LinearConfig.from_settings(settings)
    vocabulary = project_vocabulary(split.texts, unlabeled, config, cache)
    calibrate_on: tuple[np.ndarray, list[str]] | None = None
    if split.eval_y:
        model = LinearClassifier.fit(split.train_x, split.train_y, classes, config=config, vectorizer=vocabulary)
        logits, truth = model.predict_logits(split.eval_x), split.eval_y
        evaluated_on = f"held-out ({len(truth)} labels)"
        # A temperature fitted on a few dozen held-out labels swings from run to run: below
        # MIN_CALIBRATION_LABELS it is fitted on out-of-fold logits of every label (docs/active-learning.md).
        if len(truth) < MIN_CALIBRATION_LABELS:
            calibrate_on = (out_of_fold(split.texts, split.labels, classes, config, vocabulary)[0], split.labels)
    else:
        logits, folds = out_of_fold(split.texts, split.labels, classes, config, vocabulary)
        truth, evaluated_on = split.labels, f"{folds}-fold cross-validation ({len(split.labels)} labels)"
    # Evaluated on a part; what serves learns from every label (a fraction of a second).
    serving = LinearClassifier.fit(split.texts, split.labels, classes, config=config, vectorizer=vocabulary)
    return {"evaluated_on": evaluated_on, **figures(classes, truth, logits, calibrate_on)}, serving


def _transformer(
    split: _Split,
    classes: list[str],
    settings: Settings,
    *,
    alone: bool,
    warm_from: Version | None,
    train_config: TrainConfig | None,
    callbacks: Sequence,
) -> tuple[dict, Any]:
    if not split.eval_y and not alone:
        return {"skipped": "too few held-out labels to compare it"}, None
    config = train_config or TrainConfig.from_settings(settings, warm=warm_from is not None, progress=False)
    base = str(warm_from.path) if warm_from else settings.model_name
    model, epochs = fine_tune(
        split.train_x,
        split.train_y,
        classes,
        base_model=base,
        config=config,
        callbacks=callbacks,
        device=settings.torch_device,
    )
    summary: dict[str, Any] = {"train_config": {**asdict(config), "base_model": base, "epochs_run": round(epochs, 2)}}
    if split.eval_y:
        summary.update(
            evaluated_on=f"held-out ({len(split.eval_y)} labels)",
            **figures(classes, split.eval_y, model.predict_logits(split.eval_x)),
        )
    else:
        summary["evaluated_on"] = "not evaluated (too few labels to hold some out)"
    return summary, model


def train_version(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    kinds: Sequence[str],
    settings: Settings,
    registry: Registry,
    scope: str,
    unlabeled: Sequence[str] | Unlabeled = (),
    warm_from: Version | None = None,
    serving: Version | None = None,
    train_config: TrainConfig | None = None,
    callbacks: Sequence = (),
    fence: tuple[str, int] | None = None,
) -> Outcome:
    """Train every kind in `kinds` on (texts, labels), keep the best (against `serving` too, when its kind is
    not retrained here), store and promote it. `unlabeled`: the project's other texts (n-gram vocabulary, and
    the prevalence that names the rarest class); `warm_from`: a transformer version to fine-tune from instead of
    MODEL_NAME; `fence`: the run's (tier, token) from Registry.fence (raises registry.Superseded)."""
    classes, texts, labels = list(classes), list(texts), list(labels)
    counts = check_labels(labels, classes, 2)
    fingerprint = labels_fingerprint(texts, labels)
    unchanged = _unchanged(serving, fingerprint, kinds)
    if unchanged:
        # Repeated Start Trainings (or forged ones) would otherwise promote copies and prune real history away.
        log.info(unchanged)
        return Outcome(None, unchanged)
    split = _Split.of(texts, labels, classes)

    trained: list[tuple[dict, Any]] = []
    for kind in kinds:
        started = time.time()
        if kind == LinearClassifier.kind:
            summary, model = _linear(split, classes, settings, unlabeled, registry.vocabularies)
        elif kind == TransformerClassifier.kind:
            summary, model = _transformer(
                split,
                classes,
                settings,
                alone=len(kinds) == 1,
                warm_from=warm_from,
                train_config=train_config,
                callbacks=callbacks,
            )
        else:
            raise ValueError(f"unknown model kind {kind!r}; MODEL_KINDS takes {list(MODEL_KINDS)}")
        trained.append(({"kind": kind, "train_seconds": round(time.time() - started, 2), **summary}, model))

    contenders = [(s, m) for s, m in trained if m is not None]
    predicted = probabilities(contenders[0][1], unlabeled).argmax(axis=1) if len(unlabeled) else []
    metric = selection_metric(classes, [*labels, *(classes[i] for i in predicted)])
    for summary, _ in trained:
        summary["score"] = None if "skipped" in summary else score_of(summary, metric)
    # The best figure wins; a tie, or no figure at all, goes to the kind listed first.
    best_summary, best = max(
        contenders, key=lambda sm: (-1.0 if sm[0]["score"] is None else sm[0]["score"], -contenders.index(sm))
    )
    candidates = [s for s, _ in trained]
    incumbent = _incumbent(serving, kinds, metric)
    if incumbent is not None:
        candidates.append(incumbent)
        if best_summary["score"] is not None and incumbent["score"] > best_summary["score"]:
            decision = (
                f"kept {incumbent['version']} ({incumbent['kind']}, {metric} {incumbent['score']:.3f}): the best "
                f"new candidate, {best_summary['kind']}, measured {best_summary['score']:.3f}"
            )
            log.info(decision)
            return Outcome(None, decision, candidates)

    best.temperature = (best_summary.get("calibration") or {}).get("temperature", 1.0)
    # What the new version predicts on the unlabeled tasks: the stop signal compares it with the serving one's.
    unlabeled_probs = probabilities(best, unlabeled) if len(unlabeled) else np.zeros(0)
    pool = as_pool(unlabeled)
    snapshot = (
        Snapshot.of_keys(pool.keys, unlabeled_probs)
        if pool is not None
        else Snapshot.of(cast(Sequence[str], unlabeled), unlabeled_probs)
    )
    version = registry.store(
        scope,
        best,
        {
            "classes": classes,
            "labels_used": len(labels),
            "labels_fingerprint": fingerprint,
            "label_counts": {c: counts.get(c, 0) for c in classes},
            "eval_size": len(split.eval_y),
            "selection_metric": metric,
            "metrics": {k: best_summary[k] for k in ("n", "accuracy", "f1_macro", "f1") if k in best_summary},
            "temperature": best.temperature,
            "candidates": candidates,
            "decision": _decision(best_summary, candidates, metric),
            "parent": serving.name if serving else None,
            "train_seconds": round(sum(s.get("train_seconds", 0) for s in candidates), 2),
            **snapshot.figures(_snapshot_of(serving, classes), settings.uncertain_margin),
        },
        extras=(snapshot,),
        fence=fence,
    )
    log.info("%s: %s", version.name, version.metadata["decision"])
    return Outcome(version, version.metadata["decision"], candidates)


def labels_fingerprint(texts: Sequence[str], labels: Sequence[str]) -> str:
    """A hash of the labeled set, whatever the order of the tasks."""
    pairs = sorted(f"{label}\x00{text}" for text, label in zip(texts, labels, strict=True))
    return hashlib.sha256("\x01".join(pairs).encode("utf-8", "replace")).hexdigest()[:32]


def _unchanged(serving: Version | None, fingerprint: str, kinds: Sequence[str]) -> str | None:
    """Why this run has nothing to learn: the serving version was trained on the very same labels by a run that
    trained (not skipped) every kind of this one. None when there is something new."""
    if serving is None or serving.metadata.get("labels_fingerprint") != fingerprint:
        return None
    trained = {c.get("kind") for c in serving.metadata.get("candidates", []) if "skipped" not in c}
    if not set(kinds) <= trained:
        return None
    return f"kept {serving.name}: it was trained on these same labels by {sorted(trained)}; nothing new to learn"


def _decision(best: dict, candidates: list[dict], metric: str) -> str:
    """ "promoted linear (f1:xenófobo 0.812; against transformer 0.655)" """
    figure = f"{metric} {best['score']:.3f}" if best["score"] is not None else "not evaluated"
    others = ", ".join(
        f"{c['kind']} {c['score']:.3f}" for c in candidates if c is not best and c.get("score") is not None
    )
    return f"promoted {best['kind']} ({figure}; against {others})" if others else f"promoted {best['kind']} ({figure})"


def _snapshot_of(version: Version | None, classes: list[str]) -> Snapshot | None:
    """The unlabeled-task predictions stored with `version`, if it predicted the same classes in the same order."""
    if version is None or version.metadata.get("classes") != classes:
        return None
    return Snapshot.load(version.path)


def out_of_fold(
    texts: list[str], labels: list[str], classes: list[str], config: LinearConfig, vocabulary: TfidfVectorizer
) -> tuple[np.ndarray, int]:
    """Logits of every label from a linear model that did not train on it; (logits, folds). The folds share the
    vocabulary: it comes from texts, never from labels. Every class needs at least 2 labels."""
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
    kind = serving.kind
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
