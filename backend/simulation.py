"""The active-learning simulation: uncertainty sampling against random sampling on labeled tweets, and the
retraining recipe (fine-tune the base model every round, or warm-start from the previous version).

A stratified test set is held out; the rest is the pool, whose labels are revealed only when a strategy picks a
tweet. Every run starts from the same random labels (the seed) and grows them to each count in `steps`:
"random" picks at random, an uncertainty strategy (margin, least_confidence, entropy: backend.uncertainty) picks
the pool tweets the previous round's version is least sure about. Each round trains as the worker does
(TrainConfig.from_settings and train_version, into a temporary registry) and is evaluated on the test set:
F1 of `TARGET`, macro F1 and training seconds. Slow on a CPU: each round trains a model.

A run is named STRATEGY-MODE, e.g. "margin-warm" or "random-scratch" (RUNS: the four the docs report).

    report = simulate(texts, labels, steps=[50, 100, 200, 300], runs=RUNS, test_size=555, seed=0)
    print(table(report))

scripts/simulate_al.py is its command line; docs/active-learning.md has the figures.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from . import uncertainty
from .labelstudio.label_config import default_label_config, parse_label_config
from .models.base import TextClassifier, evaluate
from .models.finetune import TrainConfig
from .models.loader import load_version
from .models.training import train_version
from .registry import Registry, Version
from .settings import Settings

RUNS = ("margin-scratch", "random-scratch", "margin-warm", "random-warm")
MODES = {"warm": True, "scratch": False}
# The rare class the project is about: its F1 on the test set is the simulation's figure.
TARGET = "xenófobo"
# Versions are scored in float32, whatever INFERENCE_DTYPE is, so that figures compare across machines.
DTYPE = "float32"

Row = dict[str, Any]


def classes() -> tuple[str, ...]:
    """The tweet project's classes, from the label config shipped with the package."""
    return parse_label_config(default_label_config()).classes


def parse_run(name: str) -> tuple[str, bool]:
    """ "margin-warm" -> ("margin", True); ValueError for an unknown strategy or mode."""
    strategy, _, mode = name.partition("-")
    if (strategy != "random" and strategy not in uncertainty.STRATEGIES) or mode not in MODES:
        known = ["random", *sorted(uncertainty.STRATEGIES)]
        raise ValueError(f"run {name!r} is not STRATEGY-MODE with STRATEGY in {known} and MODE in {sorted(MODES)}")
    return strategy, MODES[mode]


def recipes(settings: Settings) -> dict[str, dict]:
    """The worker's recipe, from the base model and warm-started, as the report records it."""
    return {
        "base": asdict(TrainConfig.from_settings(settings, warm=False, progress=False)),
        "warm": asdict(TrainConfig.from_settings(settings, warm=True, progress=False)),
    }


def split(
    texts: Sequence[str], labels: Sequence[str], *, test_size: int, seed: int
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(pool texts, test texts, pool labels, test labels): the rows whose label is one of the classes, with a
    stratified test set of `test_size`."""
    known = set(classes())
    kept = [(text, label) for text, label in zip(texts, labels, strict=True) if label in known]
    x, y = [text for text, _ in kept], [label for _, label in kept]
    pool_x, test_x, pool_y, test_y = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    return list(pool_x), list(test_x), list(pool_y), list(test_y)


def most_uncertain(
    classifier: TextClassifier, texts: Sequence[str], candidates: np.ndarray, need: int, strategy: str
) -> np.ndarray:
    """The `need` indices among `candidates` (into `texts`) whose tweets `classifier` is least sure about."""
    scores = uncertainty.score(classifier.predict_proba([texts[i] for i in candidates]), strategy)
    return candidates[np.argsort(scores, kind="stable")[:need]]


def run(
    name: str,
    pool_x: Sequence[str],
    pool_y: Sequence[str],
    test_x: Sequence[str],
    test_y: Sequence[str],
    *,
    steps: Sequence[int],
    seed: int,
    settings: Settings,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """One run: a row per count in `steps` (labels, TARGET among them, F1 of TARGET, macro F1, training s)."""
    strategy, warm = parse_run(name)
    names = classes()
    rng = np.random.default_rng(seed)
    labeled = [int(i) for i in rng.choice(len(pool_x), size=steps[0], replace=False)]
    rows: list[Row] = []
    previous: Version | None = None
    classifier: TextClassifier | None = None  # the previous round's version, which picks the next labels
    with tempfile.TemporaryDirectory(prefix=f"sim-{name}-") as folder:
        registry = Registry(folder)
        for target in steps:
            if len(labeled) < target:
                rest = np.setdiff1d(np.arange(len(pool_x)), labeled)
                need = target - len(labeled)
                if strategy == "random" or classifier is None:
                    picked = rng.choice(rest, size=need, replace=False)
                else:
                    picked = most_uncertain(classifier, pool_x, rest, need, strategy)
                labeled.extend(int(i) for i in picked)
            start_from = previous if warm else None
            started = time.time()
            version = train_version(
                [pool_x[i] for i in labeled],
                [pool_y[i] for i in labeled],
                names,
                base_model=str(start_from.path) if start_from else settings.model_name,
                registry=registry,
                scope="sim",
                config=TrainConfig.from_settings(settings, warm=start_from is not None, progress=False),
                parent=previous.name if previous else None,
            )
            seconds = time.time() - started
            classifier = load_version(version, settings, dtype=DTYPE)
            metrics = evaluate(classifier, test_x, test_y)
            row: Row = {
                "run": name,
                "labels": len(labeled),
                "xenofobo_in_labels": sum(pool_y[i] == TARGET for i in labeled),
                "f1_xenofobo": round(metrics["f1"][TARGET], 3),
                "f1_macro": round(metrics["f1_macro"], 3),
                "train_seconds": round(seconds, 1),
            }
            if on_row:
                on_row(row)
            rows.append(row)
            previous = version
    return rows


def simulate(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    steps: Sequence[int],
    runs: Sequence[str] = RUNS,
    test_size: int = 555,
    seed: int = 0,
    settings: Settings | None = None,
    out: Path | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> dict[str, Any]:
    """Every run on the same split; the report (recipe, test size, seed, rows), also written as JSON to `out`
    after each run, so that a long simulation keeps what it finished."""
    settings = settings or Settings()
    for name in runs:
        parse_run(name)  # fail before hours of training, not after
    steps = list(steps)
    if not steps or steps != sorted(steps) or steps[0] < 1:
        raise ValueError(f"steps must be ascending label counts, got {steps}")
    if TARGET not in classes():
        raise ValueError(f"the label config's classes {classes()} lack {TARGET!r}")
    pool_x, test_x, pool_y, test_y = split(texts, labels, test_size=test_size, seed=seed)
    if steps[-1] > len(pool_x):
        raise ValueError(f"{steps[-1]} labels asked for, but the pool has {len(pool_x)} tweets")
    report: dict[str, Any] = {"recipe": recipes(settings), "test_size": len(test_y), "seed": seed, "rows": []}
    for name in runs:
        report["rows"] += run(
            name, pool_x, pool_y, test_x, test_y, steps=steps, seed=seed, settings=settings, on_row=on_row
        )
        if out:
            out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return report


def table(report: dict[str, Any]) -> str:
    """F1 of TARGET, a line per run and a column per label count."""
    rows = report["rows"]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    steps = sorted({r["labels"] for r in rows})
    lines = [f"{'run':<16}" + "".join(f"{s:>8}" for s in steps)]
    for name in runs:
        f1s = {r["labels"]: r["f1_xenofobo"] for r in rows if r["run"] == name}
        lines.append(f"{name:<16}" + "".join(f"{f1s.get(s, float('nan')):>8.3f}" for s in steps))
    return "\n".join(lines)
