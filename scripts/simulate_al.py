"""Active-learning simulation on real labeled tweets: margin sampling against random sampling, and the
retraining recipe (fine-tune the base model every round, or warm-start from the previous version).

    .venv/bin/python scripts/simulate_al.py [--data ../shared/data/tweets_labeled.csv] [--steps 50,100,200,300]

A stratified test set is held out; the rest is the pool whose labels are revealed only when a strategy picks a
tweet. Every run starts from the same random labels. Prints F1(xenófobo), macro F1 and training seconds per
round, and writes them as JSON (--out). Slow on a CPU: each round trains a model.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import uncertainty  # noqa: E402
from backend.model import Classifier  # noqa: E402
from backend.registry import Registry  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.jobs import recipe  # noqa: E402
from backend.training import train_version  # noqa: E402

CLASSES = ["ok", "xenófobo"]


def read(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] in CLASSES]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def run(name, strategy, warm, pool_x, pool_y, test_x, test_y, steps, seed, settings):
    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(pool_x), size=steps[0], replace=False))
    registry = Registry(tempfile.mkdtemp(prefix=f"sim-{name}-"))
    previous = None
    rows = []
    for target in steps:
        if len(labeled) < target:
            rest = np.setdiff1d(np.arange(len(pool_x)), labeled)
            need = target - len(labeled)
            if strategy == "random":
                picked = rng.choice(rest, size=need, replace=False)
            else:
                clf = Classifier.load(previous.path, version=previous.name)
                scores = uncertainty.score(clf.predict_proba([pool_x[i] for i in rest]), strategy)
                picked = rest[np.argsort(scores, kind="stable")[:need]]
            labeled.extend(int(i) for i in picked)
        config = recipe(settings, warm=bool(warm and previous))  # exactly what the worker trains with
        started = time.time()
        version = train_version(
            [pool_x[i] for i in labeled], [pool_y[i] for i in labeled], CLASSES,
            base_model=str(previous.path) if warm and previous else settings.model_name,
            registry=registry, scope="sim", config=config, parent=previous.name if previous else None,
        )
        seconds = time.time() - started
        clf = Classifier.load(version.path, version=version.name)
        predicted = [CLASSES[i] for i in clf.predict_proba(test_x).argmax(axis=1)]
        f1 = f1_score(test_y, predicted, labels=CLASSES, average=None, zero_division=0)
        row = {"run": name, "labels": len(labeled), "xenofobo_in_labels": sum(pool_y[i] == "xenófobo" for i in labeled),
               "f1_xenofobo": round(float(f1[1]), 3), "f1_macro": round(float(f1.mean()), 3),
               "train_seconds": round(seconds, 1)}
        print(json.dumps(row, ensure_ascii=False), flush=True)
        rows.append(row)
        previous = version
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "tweets_labeled.csv")
    parser.add_argument("--steps", default="50,100,200,300", help="label counts at which to train and evaluate")
    parser.add_argument("--runs", default="margin-scratch,random-scratch,margin-warm,random-warm")
    parser.add_argument("--test-size", type=int, default=555)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("simulation.json"))
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"no data at {args.data}: the simulation needs real labeled tweets (text,label)")

    texts, labels = read(args.data)
    pool_x, test_x, pool_y, test_y = train_test_split(
        texts, labels, test_size=args.test_size, stratify=labels, random_state=args.seed)
    steps = [int(s) for s in args.steps.split(",")]
    # The worker's recipe (backend/jobs.py), with the settings of the environment (TRAIN_EPOCHS, ...).
    settings = Settings()
    results = []
    for name in args.runs.split(","):
        strategy, mode = name.split("-")
        results += run(name, strategy, mode == "warm", pool_x, pool_y, test_x, test_y, steps, args.seed, settings)
        recipes = {"base": asdict(recipe(settings, warm=False)), "warm": asdict(recipe(settings, warm=True))}
        args.out.write_text(json.dumps({"recipe": recipes, "test_size": len(test_y), "seed": args.seed,
                                        "rows": results}, indent=1, ensure_ascii=False))
    print(f"\n{'run':<16}" + "".join(f"{s:>8}" for s in steps))
    for name in args.runs.split(","):
        f1s = {r["labels"]: r["f1_xenofobo"] for r in results if r["run"] == name}
        print(f"{name:<16}" + "".join(f"{f1s.get(s, float('nan')):>8.3f}" for s in steps))


if __name__ == "__main__":
    main()
