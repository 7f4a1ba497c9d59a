"""Offline scoring of a CSV of tweets: the notebook's table, most uncertain first."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import uncertainty
from .errors import BackendError
from .serving import ModelStore
from .settings import Settings


def score_csv(
    source: Path, out: Path, settings: Settings, *, project: str | None = None, threshold: float | None = None
) -> int:
    """Write id, text, p_<class>..., margin, label sorted by margin; returns the number of rows written."""
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            raise ValueError(f"{source} has no `text` column; found {reader.fieldnames}")
        rows = list(reader)

    classifier = ModelStore(settings).get(project)
    if not classifier.trained:
        raise BackendError(f"{classifier.version}: no trained model yet; run `python -m backend train --csv FILE`")
    probs = classifier.predict_proba([r["text"] for r in rows], progress=True)
    margins = uncertainty.margin(probs)
    order = np.argsort(margins, kind="stable")

    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", *[f"p_{c}" for c in classifier.labels], "margin", "label"])
        for i in order:
            if threshold is not None and margins[i] > threshold:
                continue
            label = classifier.labels[int(probs[i].argmax())]
            writer.writerow([rows[i].get("id", i), rows[i]["text"], *np.round(probs[i], 6), round(float(margins[i]), 6), label])
            written += 1
    return written
