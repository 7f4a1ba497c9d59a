"""Tables of tweets as files: the one CSV reader (with required columns), the one reading of its labels, and the
one writer (CSV or JSON)."""

from __future__ import annotations

import csv
import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def read_csv(path: Path, required: Sequence[str] = ("text",)) -> list[dict]:
    """Every row of a UTF-8 CSV with a header; ValueError naming the missing columns, or the row that cannot be
    read. Bytes that are not UTF-8 become U+FFFD: one broken tweet never stops an import. A byte-order mark
    (Excel's "CSV UTF-8") is not part of the first column's name."""
    with Path(path).open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        # strict: a quote left open would otherwise swallow every row after it into one field, silently.
        reader = csv.DictReader(handle, strict=True)
        rows: list[dict] = []
        start = 1
        try:
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path} lacks column(s) {missing}; found {reader.fieldnames}")
            start = reader.line_num + 1
            for row in reader:
                rows.append(row)
                start = reader.line_num + 1
        except csv.Error as exc:  # a quote left open, a field over csv's limit of 131,072 characters
            raise ValueError(
                f"{path}: the row starting on line {start} cannot be read ({exc}); is a quote left open?"
            ) from None
    return rows


def _label_key(label: str) -> str:
    return unicodedata.normalize("NFC", label).strip().casefold()


def class_of(label: str, classes: Sequence[str]) -> str | None:
    """The class `label` names, spelled as in `classes`: spreadsheets and other tools change case, spacing and
    the Unicode form of accents ("Xenófobo ", "xeno\u0301fobo" with a combining accent). None: it names none."""
    key = _label_key(label)
    return next((c for c in classes if _label_key(c) == key), None)


def labeled_rows(
    rows: Sequence[dict], classes: Sequence[str] | None = None, *, strict: bool = True
) -> tuple[list[str], list[str]]:
    """(texts, labels) of the rows with a label (a row without one is skipped); each label spelled as its class
    in `classes` (None: as the CSV spells it, in NFC). Labels that are no class are named with their counts: a
    ValueError, or with `strict=False` a warning and those rows left out; never silently, since they change
    what is learned or measured."""
    texts: list[str] = []
    labels: list[str] = []
    unknown: Counter[str] = Counter()
    for row in rows:
        raw = row.get("label") or ""
        if not raw.strip():
            continue
        label = class_of(raw, classes) if classes is not None else unicodedata.normalize("NFC", raw).strip()
        if label is None:
            unknown[raw.strip()] += 1
            continue
        texts.append(row.get("text") or "")
        labels.append(label)
    if unknown:
        found = ", ".join(f"{name!r} ({count})" for name, count in unknown.most_common(5))
        message = f"labels that are not among {list(classes or [])}: {found}"
        if strict:
            raise ValueError(message)
        log.warning("%s; left out: %d row(s)", message, sum(unknown.values()))
    return texts, labels


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
