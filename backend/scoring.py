"""The notebook's table of tweets, most uncertain first: from a CSV (`predict`) or from a Label Studio
project's unlabeled tasks (`export`), written as CSV or JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from . import uncertainty
from .errors import BackendError
from .serving import ModelStore
from .settings import Settings


def score_rows(rows: list[dict], settings: Settings, *, project: str | int | None = None,
               threshold: float | None = None) -> tuple[list[dict], list[str]]:
    """rows (`id`, `text`) -> (table, its columns): id, text, p_<class>..., margin, label; sorted by margin,
    only `margin <= threshold` when given."""
    classifier = ModelStore(settings).get(project)
    if not classifier.trained:
        raise BackendError(f"{classifier.version}: no trained model yet; run `python -m backend train --csv FILE`")
    probs = classifier.predict_proba([r["text"] for r in rows], progress=True)
    margins = uncertainty.margin(probs)
    table = []
    for i in np.argsort(margins, kind="stable"):
        if threshold is not None and margins[i] > threshold:
            continue
        table.append({
            "id": rows[i].get("id", int(i)),
            "text": rows[i]["text"],
            **{f"p_{c}": round(float(p), 6) for c, p in zip(classifier.labels, probs[i])},
            "margin": round(float(margins[i]), 6),
            "label": classifier.labels[int(probs[i].argmax())],
        })
    return table, ["id", "text", *[f"p_{c}" for c in classifier.labels], "margin", "label"]


def write_table(table: list[dict], out: Path, columns: list[str]) -> None:
    """CSV, or JSON (a list of objects) when `out` ends in .json."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(table, ensure_ascii=False, indent=1), encoding="utf-8")
        return
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)


def score_csv(
    source: Path, out: Path, settings: Settings, *, project: str | None = None, threshold: float | None = None
) -> int:
    """Score a CSV with a `text` column; returns the number of rows written."""
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "text" not in (reader.fieldnames or []):
            raise ValueError(f"{source} has no `text` column; found {reader.fieldnames}")
        rows = list(reader)
    table, columns = score_rows(rows, settings, project=project, threshold=threshold)
    write_table(table, out, columns)
    return len(table)


def export_project(project: int, out: Path, settings: Settings, *, threshold: float | None = None) -> int:
    """Score the unlabeled tasks of a Label Studio project with the version serving it."""
    from .labels import parse_label_config
    from .labelstudio import LabelStudioClient

    client = LabelStudioClient.from_settings(settings)
    config = parse_label_config(client.label_config(project))
    rows = [{"id": task.id, "text": task.text} for task in client.unlabeled(project, config)]
    table, columns = score_rows(rows, settings, project=project, threshold=threshold)
    write_table(table, out, columns)
    return len(table)
