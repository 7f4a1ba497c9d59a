"""The notebook's table of tweets, most uncertain first: from a CSV (`predict`) or from a Label Studio
project's unlabeled tasks (`export`), written as CSV or JSON.

Rows are ranked by the configured UNCERTAINTY (ascending: most uncertain first); the table always has the
margin, and the configured score too when it is another strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import uncertainty
from .errors import NoTrainedModel
from .model_store import ModelStore
from .models.base import TextClassifier
from .settings import Settings
from .tables import read_csv, write_table


def score_rows(
    rows: list[dict], settings: Settings, *, project: str | int | None = None, threshold: float | None = None
) -> tuple[list[dict], list[str]]:
    """rows (`id`, `text`) -> (table, its columns): id, text, p_<class>..., margin[, <strategy>], label; most
    uncertain first; only rows whose score is <= threshold when given."""
    classifier = _trained(settings, project)
    probs = classifier.predict_proba([r["text"] for r in rows], progress=True)
    return _table(rows, probs, classifier.labels, settings, threshold)


def _trained(settings: Settings, project: str | int | None) -> TextClassifier:
    classifier = ModelStore(settings).get(project)
    if not classifier.trained:
        raise NoTrainedModel(f"{classifier.version}: no trained model yet; run `python -m backend train --csv FILE`")
    return classifier


def _table(
    rows: list[dict], probs: np.ndarray, labels: Sequence[str], settings: Settings, threshold: float | None
) -> tuple[list[dict], list[str]]:
    strategy = settings.uncertainty
    margins = uncertainty.margin(probs)
    scores = uncertainty.score(probs, strategy)
    extra = [] if strategy == "margin" else [strategy]
    table = []
    for i in np.argsort(scores, kind="stable"):
        if threshold is not None and scores[i] > threshold:
            continue
        table.append(
            {
                "id": rows[i].get("id", int(i)),
                "text": rows[i]["text"],
                **{f"p_{c}": round(float(p), 6) for c, p in zip(labels, probs[i], strict=True)},
                "margin": round(float(margins[i]), 6),
                **{name: round(float(scores[i]), 6) for name in extra},
                "label": labels[int(probs[i].argmax())],
            }
        )
    return table, ["id", "text", *[f"p_{c}" for c in labels], "margin", *extra, "label"]


def score_csv(
    source: Path, out: Path, settings: Settings, *, project: str | None = None, threshold: float | None = None
) -> int:
    """Score a CSV with a `text` column; returns the number of rows written."""
    table, columns = score_rows(read_csv(source, ["text"]), settings, project=project, threshold=threshold)
    write_table(table, out, columns)
    return len(table)


def export_project(project: int, out: Path, settings: Settings, *, threshold: float | None = None) -> int:
    """Score the unlabeled tasks of a Label Studio project with the version serving it: the worker's pool of the
    project brought up to date (only what changed is read), less its annotated tasks; a linear version serving
    under the pool's vocabulary scores it from the cached rows."""
    from .labelstudio.client import LabelStudioClient
    from .labelstudio.label_config import parse_label_config
    from .retraining.pool import PoolStore

    client = LabelStudioClient.from_settings(settings)
    config = parse_label_config(client.label_config(project))
    pool, _ = PoolStore.of(settings, project).sync(client, config)
    unlabeled = pool.without(client.annotated_ids(project))
    classifier = _trained(settings, project)
    rows = [{"id": int(i), "text": text} for i, text in zip(unlabeled.ids, unlabeled.texts(), strict=True)]
    table, columns = _table(rows, unlabeled.probabilities(classifier), classifier.labels, settings, threshold)
    write_table(table, out, columns)
    return len(table)
