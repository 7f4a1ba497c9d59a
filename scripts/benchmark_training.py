"""Benchmark: the transformer kind's fine-tuning (the default recipe, from MODEL_NAME) and scoring on each
TORCH_DEVICE given, in one run, with the ratio to the first. Prints figures; results live in docs/benchmarks.md.

    .venv/bin/python scripts/benchmark_training.py [--labels 1000] [--score 2000] [--devices cuda,cpu]

Labeled tweets from ../shared/data when it is there, else the demo tweets, repeated up to --labels (the cost of
a step does not depend on which tweets it sees).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from backend.models.finetune import TrainConfig, fine_tune  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.tables import read_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "tweets_labeled.csv"
CLASSES = ["ok", "xenófobo"]


def tweets(n: int) -> tuple[list[str], list[str], Path]:
    source = SHARED if SHARED.exists() else DEMO / "tweets_labeled.csv"
    rows = read_csv(source, ["text", "label"])
    rows = [rows[i % len(rows)] for i in range(n)]
    return [r["text"] for r in rows], [r["label"] for r in rows], source


def run(device: str, texts: list[str], labels: list[str], score: int, settings: Settings) -> dict:
    config = TrainConfig.from_settings(settings, warm=False, progress=False)
    started = time.perf_counter()
    model, epochs = fine_tune(texts, labels, CLASSES, base_model=settings.model_name, config=config, device=device)
    trained = time.perf_counter() - started
    batch = [texts[i % len(texts)] for i in range(score)]
    model.predict_logits(batch[:64])  # warm-up: the first batch on a GPU loads its kernels
    started = time.perf_counter()
    model.predict_logits(batch)
    return {"train": trained, "score": time.perf_counter() - started, "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--score", type=int, default=2000, help="tweets scored after the training")
    parser.add_argument("--devices", default="cuda,cpu", help="TORCH_DEVICE values, the first is the reference")
    args = parser.parse_args()
    settings = Settings()
    texts, labels, source = tweets(args.labels)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; base model {settings.model_name}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"{args.labels} labels from {source}; scoring {args.score} tweets")
    results = {}
    for device in devices:
        results[device] = result = run(device, texts, labels, args.score, settings)
        print(
            f"{device:5s} fine-tuning {result['train']:7.1f} s ({result['epochs']:.1f} epochs)   "
            f"scoring {result['score']:6.2f} s",
            flush=True,
        )
    first = results[devices[0]]
    for device in devices[1:]:
        other = results[device]
        print(
            f"{device} / {devices[0]}: fine-tuning {other['train'] / first['train']:.1f}x, "
            f"scoring {other['score'] / first['score']:.1f}x"
        )


if __name__ == "__main__":
    main()
