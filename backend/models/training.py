"""Labels in, a stored and promoted registry version out: check -> hold-out split -> fit -> evaluate -> store.

The same `train_version` serves `python -m backend train --csv FILE`, the retraining worker and the simulation.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

from sklearn.model_selection import train_test_split

from ..registry import Registry, Version
from .base import check_labels, evaluate
from .finetune import TrainConfig, fine_tune

log = logging.getLogger(__name__)


def holdout_split(texts: list[str], labels: list[str], config: TrainConfig) -> tuple[list, list, list, list]:
    """(train texts, held-out texts, train labels, held-out labels), stratified; nothing held out when a class
    would keep fewer than `min_eval_per_class` examples on the held-out side."""
    counts = Counter(labels)
    if config.eval_fraction <= 0 or min(counts.values()) * config.eval_fraction < config.min_eval_per_class:
        return texts, [], labels, []
    n_eval = int(round(len(labels) * config.eval_fraction))
    return train_test_split(texts, labels, test_size=n_eval, stratify=labels, random_state=config.seed)


def train_version(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    base_model: str,
    registry: Registry,
    scope: str,
    config: TrainConfig,
    parent: str | None = None,
    callbacks: Sequence = (),
) -> Version:
    """Fine-tune `base_model` on (texts, labels), evaluate on a held-out part, store and promote a new version."""
    classes = list(classes)
    counts = check_labels(labels, classes, config.min_per_class)
    started = time.time()
    train_x, eval_x, train_y, eval_y = holdout_split(list(texts), list(labels), config)
    classifier, epochs = fine_tune(train_x, train_y, classes, base_model=base_model, config=config, callbacks=callbacks)
    train_seconds = time.time() - started
    metrics = evaluate(classifier, eval_x, eval_y) if eval_x else {}
    if metrics:
        log.info("held-out metrics: %s", metrics)
    return registry.store(
        scope,
        classifier,
        {
            "base_model": str(base_model),
            "parent": parent,
            "classes": classes,
            "labels_used": len(labels),
            "label_counts": {c: counts.get(c, 0) for c in classes},
            "train_size": len(train_x),
            "eval_size": len(eval_x),
            "metrics": metrics,
            "train_config": asdict(config),
            "train_seconds": round(train_seconds, 2),
            "epochs": round(epochs, 2),
        },
    )
