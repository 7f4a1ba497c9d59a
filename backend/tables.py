"""Tables of tweets as files: the one CSV reader (with required columns) and the one writer (CSV or JSON)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path


def read_csv(path: Path, required: Sequence[str] = ("text",)) -> list[dict]:
    """Every row of a UTF-8 CSV with a header; ValueError naming the missing columns. Bytes that are not UTF-8
    become U+FFFD: one broken tweet never stops an import."""
    with Path(path).open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks column(s) {missing}; found {reader.fieldnames}")
        return list(reader)


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
