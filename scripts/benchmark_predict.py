"""Benchmark: /predict throughput over HTTP against transformers.pipeline on the same model and tweets,
plus /setup and /health latency. Prints figures; targets live in docs/benchmarks.md, not in tests.

    .venv/bin/python scripts/benchmark_predict.py [--n 1000] [--big 5000] [--model-dir DIR]

Without --model-dir it first trains a small version on the demo tweets (1 epoch) into a temp dir.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import requests  # noqa: E402

from backend.labelstudio.label_config import default_label_config, parse_label_config  # noqa: E402
from backend.models.finetune import TrainConfig  # noqa: E402
from backend.models.preprocess import normalize_tweet  # noqa: E402
from backend.models.training import train_version  # noqa: E402
from backend.models.transformer import inference_dtype, torch_device  # noqa: E402
from backend.registry import Registry  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.stack.processes import free_port, start_backend, stop  # noqa: E402
from backend.tables import read_csv  # noqa: E402

SHARED_POOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets_pool.csv"


def tweets(n: int) -> tuple[list[str], str]:
    source = SHARED_POOL if SHARED_POOL.exists() else DEMO / "tweets_pool.csv"
    texts = [r["text"] for r in read_csv(source, ["text"])]
    return [texts[i % len(texts)] for i in range(n)], str(source)


def ensure_model(model_dir: str | None) -> Path:
    """--model-dir, else a registry with one transformer version trained here on the demo tweets (1 epoch)."""
    if model_dir:
        return Path(model_dir)
    path = Path(tempfile.mkdtemp(prefix="bench-models-"))
    settings = Settings(model_dir=path)
    rows = read_csv(DEMO / "tweets_labeled.csv", ["text", "label"])
    train_version(
        [r["text"] for r in rows],
        [r["label"] for r in rows],
        parse_label_config(default_label_config()).classes,
        kinds=["transformer"],
        settings=settings,
        registry=Registry(path),
        scope="default",
        train_config=TrainConfig.from_settings(settings, warm=False, epochs=1, min_steps=0, progress=False),
    )
    return path


def serve(model_dir: Path, dtype: str) -> tuple[subprocess.Popen, str]:
    env = {
        "MODEL_DIR": str(model_dir),
        "WORKERS": "1",
        "THREADS": "4",
        "LOG_LEVEL": "WARNING",
        "INFERENCE_DTYPE": dtype,
    }
    return start_backend(env, free_port(), model_dir / f"backend-{dtype}.log")


def predict_seconds(url: str, texts: list[str], config: str) -> float:
    body = {
        "tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)],
        "project": "1.1",
        "label_config": config,
    }
    started = time.perf_counter()
    answer = requests.post(f"{url}/predict", json=body, timeout=600)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    assert len(answer.json()["results"]) == len(texts)
    return elapsed


def pipeline_seconds(model_path: Path, texts: list[str], dtype: str = "float32") -> float:
    import torch
    from transformers import pipeline

    clf = pipeline(
        "text-classification",
        model=str(model_path),
        top_k=None,
        truncation=True,
        max_length=128,
        dtype=getattr(torch, dtype),
        device=torch_device(Settings().torch_device),  # where the backend runs it too
    )
    prepared = [normalize_tweet(t) for t in texts]  # the same input the backend sees
    with torch.inference_mode():
        clf(prepared[:8])  # warm-up, as the backend is warm
        started = time.perf_counter()
        clf(prepared)
    return time.perf_counter() - started


def latencies(url: str, method: str, path: str, n: int, **kw) -> tuple[float, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        requests.request(method, f"{url}{path}", timeout=5, **kw).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--big", type=int, default=5000, help="tasks in one /predict (Label Studio allows 100 s)")
    parser.add_argument("--model-dir")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds of both; medians reported")
    args = parser.parse_args()

    model_dir = ensure_model(args.model_dir)
    version = Registry(model_dir).current("default")
    if version is None:
        parser.error(f"{model_dir} has no current version in its scope 'default' (a MODEL_DIR with default/CURRENT)")
    texts, source = tweets(args.n)
    config = default_label_config()
    print(f"tweets: {args.n} from {source}; model {version.name}; {os.cpu_count()} CPU cores")
    auto = str(inference_dtype("auto")).removeprefix("torch.")
    print(f"INFERENCE_DTYPE=auto is {auto} on this CPU")
    procs = []
    try:
        for dtype in ("auto", "float32"):
            procs.append(serve(model_dir, dtype))
        (_, url), (_, url32) = procs
        predict_seconds(url, texts[:16], config)  # warm-up
        predict_seconds(url32, texts[:16], config)
        # Alternate them, so that a noisy moment on this machine hits all, and take the medians.
        runs = [
            {
                "/predict (default: auto)": predict_seconds(url, texts, config),
                "/predict (float32)": predict_seconds(url32, texts, config),
                "pipeline (float32)": pipeline_seconds(version.path, texts),
                "pipeline (bfloat16)": pipeline_seconds(version.path, texts, "bfloat16"),
            }
            for _ in range(args.repeat)
        ]
        setup = latencies(url, "POST", "/setup", 200, json={"project": "1.1", "schema": config})
        health = latencies(url, "GET", "/health", 200)
        big_s = predict_seconds(url, tweets(args.big)[0], config) if args.big else None
    finally:
        for proc, _ in procs:
            stop(proc)
    median = {name: float(np.median([r[name] for r in runs])) for name in runs[0]}
    for number, r in enumerate(runs, 1):
        print(f"round {number}: " + ", ".join(f"{name} {s:.2f} s" for name, s in r.items()))
    for name, seconds in median.items():
        print(f"{name:<26}: {args.n / seconds:8.1f} tweets/s ({seconds:.2f} s, median)")
    base = median["pipeline (float32)"]
    print(f"/predict default vs pipeline float32 : {base / median['/predict (default: auto)']:5.2f}x  (target >= 2x)")
    print(f"/predict float32 vs pipeline float32 : {base / median['/predict (float32)']:5.2f}x")
    print(
        f"/predict default vs pipeline bfloat16: "
        f"{median['pipeline (bfloat16)'] / median['/predict (default: auto)']:5.2f}x"
    )
    print(f"/setup  p50/p99    : {setup[0]:.1f} / {setup[1]:.1f} ms  (target p99 <= 50 ms)")
    print(f"/health p50/p99    : {health[0]:.1f} / {health[1]:.1f} ms")
    if big_s is not None:
        print(f"{args.big} tasks in one /predict: {big_s:.1f} s  (Label Studio's limit: 100 s)")


if __name__ == "__main__":
    main()
