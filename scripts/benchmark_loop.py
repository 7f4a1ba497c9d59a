"""Benchmark of the retraining loop against a real Label Studio, Redis and RQ workers started here: the stack of
`make run` and the e2e tests (backend.stack.launcher.LocalStack), on free ports in a temporary folder.

    .venv/bin/python scripts/benchmark_loop.py [--labeled 1000] [--unlabeled 2000] [--workers 1,2]

1. Webhook latency: p50/p99 of 50 concurrent POST /webhook (annotation events, as Label Studio sends them).
2. Loop latency: a project with LABELED annotated and UNLABELED unlabeled real tweets (../shared/data, else the
   demo data) gets a first version (START_TRAINING, from the base model); then, for each worker count, one
   annotation made through Label Studio's API triggers a retrain (RETRAIN_EVERY=1), and the clock stops when
   every unlabeled task carries a prediction of the new version and the project uses it.
   Where the time goes comes from the jobs' own results (reading labels, training, scoring, writing).
Prints figures; they are written down in docs/benchmarks.md. --webhook-only: only Redis and the backend.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import requests  # noqa: E402

from backend.labelstudio.label_config import default_label_config, parse_label_config  # noqa: E402
from backend.retraining.policy import connect  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.stack.launcher import LocalStack, label_studio_bin  # noqa: E402
from backend.stack.processes import RedisServer, free_port, start_backend, stop  # noqa: E402
from backend.tables import read_csv  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = parse_label_config(default_label_config())


def read(name: str, required: list[str]) -> list[dict]:
    return read_csv(SHARED / name if (SHARED / name).exists() else DEMO / name, required)


def cycle(rows: list, n: int) -> list:
    return [rows[i % len(rows)] for i in range(n)]


def pct(values, q) -> float:
    return float(np.percentile(values, q)) * 1000


def webhook_latency(backend: str, n: int = 50) -> tuple[float, float]:
    # A project id no one uses, so the events start no real training in the loop measured next.
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": {"id": 10**9}}

    def post(_):
        started = time.perf_counter()
        answer = requests.post(f"{backend}/webhook", json=body, timeout=5)
        answer.raise_for_status()
        return time.perf_counter() - started

    samples = []
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for _ in range(4):
            samples += list(pool.map(post, range(n)))
    return pct(samples, 50), pct(samples, 99)


def wait_switch(ls, project: int, version: str, workers: list, timeout: float = 1800) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ls.projects.get(id=project).model_version == version:
            return time.time()
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker died; see its log")
        time.sleep(0.25)
    raise TimeoutError(f"project never switched to {version}")


def job_breakdown(redis, queue_name: str, since: float) -> dict:
    """Sum of what the finished jobs of this round report, by kind."""
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    queue = Queue(queue_name, connection=redis)
    totals = {"read": 0.0, "train": 0.0, "score": 0.0, "chunk_total": 0.0, "chunks": 0}
    for job in queue.job_class.fetch_many(FinishedJobRegistry(queue=queue).get_job_ids(), connection=redis):
        if job is None or not job.ended_at or job.ended_at.timestamp() < since:
            continue
        result = job.return_value() or {}
        if job.func_name.endswith("train_project"):
            totals["read"] += result.get("read_seconds", 0)
            totals["train"] += result.get("train_seconds") or 0
        elif job.func_name.endswith("score_chunk"):
            totals["score"] += result.get("score_seconds", 0)
            totals["chunk_total"] += result.get("seconds", 0)
            totals["chunks"] += 1
    return totals


def webhook_only() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    redis_server = RedisServer(work).start()
    env = {"MODEL_DIR": str(work / "models"), "REDIS_URL": redis_server.url, "HF_HUB_OFFLINE": "1"}
    try:
        for workers, every in (("1", "1"), ("1", "10"), ("2", "1"), ("2", "10")):
            overrides = {"RETRAIN_EVERY": every, "WORKERS": workers}
            proc, backend = start_backend({**env, **overrides}, free_port(), work / "backend.log")
            try:
                p50, p99 = webhook_latency(backend)
                print(
                    f"webhook latency, 50 concurrent posts x4, WORKERS={workers} RETRAIN_EVERY={every}: "
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                )
            finally:
                stop(proc)
    finally:
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--unlabeled", type=int, default=2000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--label-studio", default=label_studio_bin())
    parser.add_argument("--webhook-only", action="store_true", help="only Redis and the backend: webhook latency")
    args = parser.parse_args()
    # `timeout` and Ctrl-C must still stop the processes started here (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.webhook_only:
        return webhook_only()
    from label_studio_sdk import LabelStudio
    from rq import Queue

    # The stack of `make run` and the e2e tests (Redis, Label Studio, the backend, one worker), on free ports.
    stack = LocalStack(
        folder=Path(tempfile.mkdtemp(prefix="bench-loop-")),
        token=secrets.token_hex(20),
        username="bench@example.com",
        password="bench-pass-123",
        ls_port=free_port(),
        port=free_port(),
        dashboard_port=free_port(),
        ls_binary=args.label_studio,
        settings_env={"RETRAIN_EVERY": "1"},
    )
    try:
        stack.start()
        settings = Settings(redis_url=stack.redis_url)
        redis = connect(settings)
        labeled, pool = read("tweets_labeled.csv", ["text", "label"]), read("tweets_pool.csv", ["text"])
        print(
            f"data: {len(labeled)} labeled / {len(pool)} unlabeled available "
            f"({'../shared/data' if (SHARED / 'tweets_pool.csv').exists() else 'demo'})"
        )
        ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
        project = ls.projects.create(title="loop benchmark", label_config=default_label_config()).id
        tasks = [
            {"data": {"text": r["text"]}, "annotations": [{"result": [LABELS.region(r["label"])]}]}
            for r in cycle(labeled, args.labeled)
        ]
        tasks += [{"data": {"text": r["text"]}} for r in cycle(pool, args.unlabeled)]
        ids = list(ls.projects.import_tasks(id=project, request=tasks, return_task_ids=True).task_ids)
        unlabeled = ids[args.labeled :]
        ls.ml.create(project=project, url=stack.backend_url, title="tweets")
        ls.projects.update(id=project, sampling="Uncertainty sampling")

        p50, p99 = webhook_latency(stack.backend_url)
        print(f"webhook latency, 50 concurrent posts x4: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        Queue(settings.rq_queue, connection=redis).empty()

        started = time.time()
        requests.post(
            f"{stack.backend_url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, timeout=5
        ).raise_for_status()
        done = wait_switch(ls, project, f"project{project}-v1", stack.workers)
        parts = job_breakdown(redis, settings.rq_queue, started)
        print(
            f"first version from the base model ({args.labeled} labels, {args.unlabeled} to re-score, 1 worker): "
            f"{done - started:.1f} s; {parts}"
        )

        version = 1
        for n in [int(w) for w in args.workers.split(",")]:
            # n workers split the cores, as the README advises (TORCH_THREADS); else they oversubscribe them.
            threads = max(1, (os.cpu_count() or 1) // n)
            for proc in stack.workers:
                stop(proc)
            stack.workers.clear()  # stack.workers: the workers running now, which wait_switch watches
            for _ in range(n):
                stack.start_worker(TORCH_THREADS=threads)
            time.sleep(10)  # let the workers finish importing torch before the clock starts
            version += 1
            task = unlabeled.pop(0)
            started = time.time()
            ls.annotations.create(id=task, result=[LABELS.region("ok")])
            done = wait_switch(ls, project, f"project{project}-v{version}", stack.workers)
            parts = job_breakdown(redis, settings.rq_queue, started)
            print(
                f"loop latency with {n} worker(s) x {threads} torch threads: {done - started:.1f} s "
                f"(read labels {parts['read']:.1f} s, train {parts['train']:.1f} s, "
                f"{parts['chunks']} chunks: scoring {parts['score']:.1f} s, "
                f"scoring+writing {parts['chunk_total']:.1f} s summed over workers)"
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
