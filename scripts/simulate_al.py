"""Active-learning simulation on real labeled tweets: margin sampling against random sampling, and the
retraining recipe (fine-tune the base model every round, or warm-start from the previous version).

    .venv/bin/python scripts/simulate_al.py [--data ../shared/data/tweets_labeled.csv] [--steps 50,100,200,300]

A stratified test set is held out; the rest is the pool whose labels are revealed only when a strategy picks a
tweet. Every run starts from the same random labels. Prints F1(xenófobo), macro F1 and training seconds per
round, and writes them as JSON (--out). Slow on a CPU: each round trains a model. The logic is
backend/simulation.py; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from backend.settings import Settings  # noqa: E402
from backend.simulation import RUNS, simulate, table  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.tables import read_csv  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets_labeled.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a CSV with text,label")
    parser.add_argument("--steps", default="50,100,200,300", help="label counts at which to train and evaluate")
    parser.add_argument("--runs", default=",".join(RUNS), help="STRATEGY-MODE, e.g. margin-warm,random-scratch")
    parser.add_argument("--test-size", type=int, default=555)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("simulation.json"))
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(
            f"no data at {args.data}: the simulation needs real labeled tweets (text,label). For a smoke test only, "
            f"the demo's: --data {DEMO / 'tweets_labeled.csv'} --test-size 60 --steps 30,60"
        )

    rows = read_csv(args.data, ["text", "label"])
    report = simulate(
        [r["text"] for r in rows],
        [r["label"] for r in rows],
        steps=[int(s) for s in args.steps.split(",")],
        runs=args.runs.split(","),
        test_size=args.test_size,
        seed=args.seed,
        settings=Settings(),  # the worker's recipe, with the settings of the environment (TRAIN_EPOCHS, ...)
        out=args.out,
        on_row=lambda row: print(json.dumps(row, ensure_ascii=False), flush=True),
    )
    print("\n" + table(report))


if __name__ == "__main__":
    main()
