"""Benchmark of the retraining loop, both tiers, against a real Label Studio, Redis and RQ workers started here:
the stack of `make run` and the e2e tests (backend.stack.launcher.LocalStack), on free ports in a temporary folder.

    .venv/bin/python scripts/benchmark_loop.py [--labeled 1000] [--unlabeled 2000] [--repeats 3] [--tiers fast,full]

A project with LABELED annotated and UNLABELED unlabeled real tweets (../shared/data, repeated when fewer; else
the demo data) in each tier's stack:

1. Webhook latency (fast tier's stack, Label Studio idle beside it): p50/p99 of 50 concurrent POST /webhook.
2. Fast tier (MODEL_KINDS=linear, RETRAIN_EVERY=1, 1 worker as `make run` starts): a first version on
   Start Training; then REPEATS times one annotation made through Label Studio's API, and the clock stops when
   the project's model_version is the new version, which happens only after its window (the QUEUE_WINDOW most
   uncertain unlabeled tasks) holds predictions of it. Each run and the median; where the time goes comes from
   the jobs' own results (reading labels and unlabeled tasks, training, scoring, writing the window, the switch,
   the cleanup job after it), and the per-task costs of reading tasks and scoring; each annotation finds the
   queue idle (the previous round's cleanup and suspect-score jobs done). Then REPEATS annotations back to back,
   each the moment the previous one switched, while its cleanup and suspect-score jobs are queued.
3. Full tier (MODEL_KINDS=linear,transformer, TRANSFORMER_EVERY=10**6, a fresh stack with 2 workers splitting the
   cores, TORCH_THREADS): Start Training runs a full run (both kinds); while its transformer trains, one
   annotation starts a fast run, timed until it switches the project; then the full run, timed until its own
   switch. Two workers, because RQ runs one job per worker: on one worker the fast run would queue behind the
   full run.

The fast tier runs on the one worker of `make run` (its loop is Label Studio I/O and sub-second training), or on
--fast-workers; the full tier needs two, and takes them. Last in the fast tier, REPEATS annotations each made a
second after the previous switch, while its cleanup job deletes the previous window: with one worker the run
waits for that delete. Prints figures; they are written down in docs/benchmarks.md. --webhook-only: only Redis
and the backend.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import requests  # noqa: E402

from backend.labelstudio.client import LabelStudioClient  # noqa: E402
from backend.labelstudio.label_config import default_label_config, parse_label_config  # noqa: E402
from backend.labelstudio.project_setup import connect_backend, request_training, webhook_headers  # noqa: E402
from backend.retraining.policy import TRAIN_FUNC, connect  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.stack.launcher import LocalStack, label_studio_bin  # noqa: E402
from backend.stack.processes import RedisServer, free_port, start_backend, stop  # noqa: E402
from backend.tables import read_csv  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = parse_label_config(default_label_config())
POLLS: list[float] = []  # seconds of each GET of the project while waiting (it loads Label Studio too)


def read(name: str, required: list[str]) -> list[dict]:
    return read_csv(SHARED / name if (SHARED / name).exists() else DEMO / name, required)


def cycle(rows: list, n: int) -> list:
    return [rows[i % len(rows)] for i in range(n)]


def pct(values, q) -> float:
    return float(np.percentile(values, q)) * 1000


def webhook_latency(backend: str, secret: str, n: int = 50) -> tuple[float, float]:
    # A project id no one uses, so the events start no real training in the loop measured next.
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": {"id": 10**9}}

    def post(_):
        started = time.perf_counter()
        answer = requests.post(f"{backend}/webhook", json=body, headers=webhook_headers(None, secret), timeout=5)
        answer.raise_for_status()
        return time.perf_counter() - started

    samples = []
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for _ in range(4):
            samples += list(pool.map(post, range(n)))
    return pct(samples, 50), pct(samples, 99)


def postgres_database(server: str) -> dict:
    """A new database on the PostgreSQL server `server` (user@host:port, as psql reaches it), for Label Studio."""
    user, _, where = server.rpartition("@")
    host, _, port = where.partition(":")
    name = f"bench_{secrets.token_hex(4)}"
    login = ["psql", "-h", host, "-p", port or "5432", "-U", user or "postgres", "-c"]
    subprocess.run([*login, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    DATABASES.append((login, name))
    return {
        "DJANGO_DB": "default",
        "POSTGRE_HOST": host,
        "POSTGRE_PORT": port or "5432",
        "POSTGRE_USER": user or "postgres",
        "POSTGRE_PASSWORD": os.environ.get("PGPASSWORD", ""),
        "POSTGRE_NAME": name,
    }


DATABASES: list[tuple[list[str], str]] = []  # dropped at exit


def new_stack(label_studio: str, settings_env: dict, prefix: str, postgres: str = "") -> LocalStack:
    """The stack of `make run` on free ports in a new folder, with `settings_env` over its settings; Label Studio on
    SQLite, or on a new database of the PostgreSQL server `postgres`."""
    return LocalStack(
        folder=Path(tempfile.mkdtemp(prefix=prefix)),
        token=secrets.token_hex(20),
        webhook_secret=secrets.token_hex(24),  # as `make run`: webhooks authenticated
        username="bench@example.com",
        password="bench-pass-123",
        ls_port=free_port(),
        port=free_port(),
        dashboard_port=free_port(),
        ls_binary=label_studio,
        settings_env=settings_env,
        ls_database=postgres_database(postgres) if postgres else {},
    )


def new_project(stack: LocalStack, args):
    """(Label Studio client, project id, ids of the unlabeled tasks), the ML backend connected."""
    from label_studio_sdk import LabelStudio

    labeled, pool = read("tweets_labeled.csv", ["text", "label"]), read("tweets_pool.csv", ["text"])
    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token, timeout=600)
    project = ls.projects.create(title="loop benchmark", label_config=default_label_config()).id
    assert project is not None
    tasks = [
        {"data": {"text": r["text"]}, "annotations": [{"result": [LABELS.region(r["label"])]}]}
        for r in cycle(labeled, args.labeled)
    ]
    tasks += [{"data": {"text": r["text"]}} for r in cycle(pool, args.unlabeled)]
    started = time.time()
    # The SDK's types name neither plain dicts as tasks nor the task_ids that return_task_ids adds to its answer.
    imported = ls.projects.import_tasks(id=project, request=tasks, return_task_ids=True)  # type: ignore[arg-type]
    ids = list(imported.task_ids)  # type: ignore[attr-defined]
    connect_backend(
        ls, project, stack.backend_url, backend_auth=stack.backend_auth, webhook_secret=stack.webhook_secret
    )
    ls.projects.update(id=project, sampling="Uncertainty sampling")
    print(
        f"project {project}: {args.labeled} labeled + {args.unlabeled} unlabeled tasks imported in "
        f"{time.time() - started:.1f} s (of {len(labeled)} labeled / {len(pool)} unlabeled tweets available, "
        f"{'../shared/data' if (SHARED / 'tweets_pool.csv').exists() else 'demo'})",
        flush=True,
    )
    return ls, project, ids[args.labeled :]


def start_training(stack: LocalStack, project: int) -> str | None:
    return request_training(stack.backend_url, project, webhook_secret=stack.webhook_secret).get("job")


def wait_switch(ls, project: int, workers: list, version: str | None = None, *, since: str = "", timeout=3600) -> str:
    """Waits until the project's model_version is `version` (None: any version of ours but `since`); returns it.
    (Before the first one, the project holds what /setup answered: the base model's name.)"""
    deadline = time.time() + timeout
    while time.time() < deadline:
        asked = time.time()
        # Only the field (include): the whole project costs Label Studio seconds at 200,000 tasks, and this poll
        # would take its time from the loop it measures.
        answer = ls._client_wrapper.httpx_client.request(
            f"api/projects/{project}/", method="GET", params={"include": "id,model_version"}
        )
        current = answer.json().get("model_version") or ""
        POLLS.append(time.time() - asked)
        ours = f"-project{project}-v" in current and current != since
        if ours and (version is None or current == version):
            return current
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker died; see worker.log")
        time.sleep(0.25)
    raise TimeoutError(f"project never switched to {version or 'a version'}")


def wall(job) -> float:
    return (job.ended_at - job.started_at).total_seconds()


def started_at(job) -> float:
    """The unix time a job started (RQ stores naive UTC datetimes)."""
    moment = job.started_at
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


def answer(job) -> dict:
    """A finished job's result; {} for one without (failed, or not finished yet)."""
    return job.return_value() or {}


def wait_idle(redis, queue_name: str, timeout: float = 300) -> None:
    """Until no job waits, runs or is scheduled on the queue (a cleanup that gave way schedules itself again)."""
    from rq import Queue

    queue = Queue(queue_name, connection=redis)
    deadline = time.time() + timeout
    busy = lambda: queue.count or queue.started_job_registry.count or queue.scheduled_job_registry.count  # noqa: E731
    while busy() and time.time() < deadline:
        time.sleep(0.25)


def suspects_outcomes(redis, queue_name: str) -> dict:
    """How the finished suspect-score jobs ended, counted by status."""
    from collections import Counter

    from rq import Queue
    from rq.registry import FinishedJobRegistry

    queue = Queue(queue_name, connection=redis)
    jobs = queue.job_class.fetch_many(FinishedJobRegistry(queue=queue).get_job_ids(), connection=redis)
    found = [j for j in jobs if j is not None and (j.func_name or "").endswith("refresh_suspects")]
    return dict(Counter(answer(j).get("status", "?") for j in found))


def jobs_of(redis, queue_name: str, version: str, timeout: float = 300) -> dict:
    """What the finished jobs that made `version` report: its training run, its chunks, its switch job, and the
    cleanup after the switch (deleting the older predictions; waited for, so that the next round does not queue
    behind it). A fast kind re-scores inside the training job (`rescored` in its result), a transformer in chunk
    jobs."""
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    queue = Queue(queue_name, connection=redis)
    registry = FinishedJobRegistry(queue=queue)
    deadline = time.time() + timeout
    while True:
        jobs = [j for j in queue.job_class.fetch_many(registry.get_job_ids(), connection=redis) if j is not None]
        of = {j: (j.func_name or "", j.kwargs.get("version")) for j in jobs}
        train = [j for j in jobs if of[j][0] == TRAIN_FUNC and answer(j).get("version") == version]
        chunks = [j for j in jobs if of[j][0].endswith("score_chunk") and of[j][1] == version]
        switch = [j for j in jobs if of[j][0].endswith("finish_rescoring") and of[j][1] == version]
        cleanup = [j for j in jobs if of[j][0].endswith("old_predictions") and of[j][1] == version]
        if (train and cleanup and ("rescored" in answer(train[0]) or switch)) or time.time() > deadline:
            break
        time.sleep(0.5)
    result = answer(train[0]) if train else {}
    inline = result.get("rescored")
    if inline:
        return {
            "tier": result.get("tier"),
            "decision": result.get("decision"),
            "read": result.get("read_seconds", 0.0),
            "train": {
                c["kind"]: c.get("train_seconds") for c in result.get("candidates", []) if c.get("train_seconds")
            },
            "train_job": result.get("seconds", 0.0),
            "train_wall": wall(train[0]),
            "chunks": 1,
            "scored": inline.get("scored", 0),
            "tasks": inline.get("predictions", 0),
            "score": inline["score_seconds"],
            "write": inline["write_seconds"],
            "chunk_wall": inline["score_seconds"] + inline["write_seconds"],
            "switch_wall": inline["switch_seconds"],
            "switch_status": inline["switch"],
            "cleanup_wall": wall(cleanup[0]) if cleanup else float("nan"),
            "inline": True,
            "train_started": started_at(train[0]),
            "pool": result.get("pool", {}),
        }
    return {
        "tier": result.get("tier"),
        "decision": result.get("decision"),
        "read": result.get("read_seconds", 0.0),
        "train": {c["kind"]: c.get("train_seconds") for c in result.get("candidates", []) if c.get("train_seconds")},
        "train_job": result.get("seconds", 0.0),
        "train_wall": wall(train[0]) if train else 0.0,
        "chunks": len(chunks),
        "scored": sum(answer(j).get("scored", 0) for j in chunks),
        "tasks": answer(switch[0]).get("predictions", 0) if switch else 0,
        "score": sum(answer(j).get("seconds", 0) for j in chunks),
        "write": answer(switch[0]).get("write_seconds", 0) if switch else 0,
        "chunk_wall": sum(wall(j) for j in chunks),
        "switch_wall": wall(switch[0]) if switch else float("nan"),
        "switch_status": answer(switch[0]).get("status") if switch else "not found",
        "cleanup_wall": wall(cleanup[0]) if cleanup else float("nan"),
    }


def describe(parts: dict) -> str:
    trained = ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in parts["train"].items())
    pool = parts.get("pool") or {}
    synced = (
        f"; the pool: {pool.get('unlabeled')} unlabeled, {pool.get('added')} tasks read into it"
        f"{', ids reconciled' if pool.get('reconciled') else ''}{', vocabulary fitted' if pool.get('refitted') else ''}"
        f" in {pool.get('seconds', 0):.1f} s"
        if pool
        else ""
    )
    return (
        f"training job {parts['train_job']:.1f} s (reading the pool and the labels {parts['read']:.1f} s{synced}, "
        f"training {trained}); {parts['chunks']} chunks: scoring {parts['scored']} tasks {parts['score']:.1f} s, "
        f"writing the window of {parts['tasks']} predictions {parts['write']:.1f} s (chunk jobs "
        f"{parts['chunk_wall']:.1f} s, summed); "
        f"switch {parts['switch_wall']:.1f} s ({parts['switch_status']}); after the switch, in a job of its own: "
        f"deleting the older window {parts['cleanup_wall']:.1f} s; decision: {parts['decision']}"
    )


def fast_tier(args) -> None:
    from rq import Queue

    env = {"MODEL_KINDS": "linear", "RETRAIN_EVERY": "1"}
    stack = new_stack(args.label_studio, env, "bench-fast-", args.postgres)
    print(f"Label Studio {stack.ls_database_where}", flush=True)
    try:
        stack.start()
        while len(stack.workers) < args.fast_workers:
            stack.start_worker()
        assert stack.redis_url is not None  # start() set it
        settings = Settings(redis_url=stack.redis_url)
        redis = connect(settings)
        ls, project, unlabeled = new_project(stack, args)

        p50, p99 = webhook_latency(stack.backend_url, stack.webhook_secret)
        print(
            f"webhook latency, 50 concurrent posts x4 (Label Studio idle beside it): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        Queue(settings.rq_queue, connection=redis).empty()  # the training those posts asked for (no such project)

        print(
            f"\n== fast tier: MODEL_KINDS=linear, RETRAIN_EVERY=1, {len(stack.workers)} worker(s) ==",
            flush=True,
        )
        started = time.time()
        start_training(stack, project)
        version = wait_switch(ls, project, stack.workers)
        done = time.time()
        parts = jobs_of(redis, settings.rq_queue, version)
        wait_idle(redis, settings.rq_queue)
        print(f"first version ({version}) on Start Training: {done - started:.1f} s; {describe(parts)}", flush=True)

        latencies, rounds = [], []
        for n in range(1, args.repeats + 1):
            previous = version
            task = unlabeled.pop(0)
            started = time.time()
            ls.annotations.create(id=task, result=[LABELS.region("ok")])
            version = wait_switch(ls, project, stack.workers, since=previous)
            latencies.append(time.time() - started)
            rounds.append(jobs_of(redis, settings.rq_queue, version))
            wait_idle(redis, settings.rq_queue)  # the suspect scores too: the next annotation finds the queue idle
            if rounds[-1].get("inline"):  # the job's wall time holds its chunks, the switch and what comes after it
                rest = latencies[-1] - (rounds[-1]["train_wall"] - rounds[-1]["switch_wall"])
            else:
                rest = latencies[-1] - rounds[-1]["train_wall"] - rounds[-1]["chunk_wall"]
            print(
                f"fast loop, annotation {n}: {latencies[-1]:.1f} s until the project uses {version}; "
                f"{describe(rounds[-1])}; the rest (webhook, job hand-offs, this poll) {rest:.1f} s",
                flush=True,
            )
        print(
            f"FAST LOOP LATENCY ({args.labeled} labeled, {args.unlabeled} unlabeled, {len(stack.workers)} worker(s)): "
            f"{', '.join(f'{x:.1f}' for x in latencies)} s; median {statistics.median(latencies):.1f} s "
            f"(polling the project every 0.25 s: {len(POLLS)} GETs of {statistics.median(POLLS) * 1000:.0f} ms median)",
            flush=True,
        )

        if args.import_tweets:
            import_into_connected(ls, project, stack, redis, settings, version, args.import_tweets)
        if args.only_rounds:
            return

        # Annotations back to back: the next one the moment the project switches, while the switch's cleanup job
        # (deleting the older predictions) and the run's suspect-score job are queued. Both give way to the run
        # the annotation asks for; deleting inline, as before commit 9ef4c8c, the run would wait for the delete
        # (the rounds' cleanup time above).
        back_to_back, annotated = [], []
        for _ in range(args.repeats):
            previous = version
            started = time.time()
            ls.annotations.create(id=unlabeled.pop(0), result=[LABELS.region("ok")])
            version = wait_switch(ls, project, stack.workers, since=previous)
            back_to_back.append(time.time() - started)
            annotated.append((started, version))
        wait_idle(redis, settings.rq_queue)
        for n, (started, made) in enumerate(annotated, 1):
            parts = jobs_of(redis, settings.rq_queue, made)
            waited = parts["train_started"] - started if parts.get("inline") else float("nan")
            print(f"back to back {n}: its run started {waited:.1f} s after the annotation; {describe(parts)}")
        print(f"suspect-score jobs: {suspects_outcomes(redis, settings.rq_queue)}")
        cleanups = [r["cleanup_wall"] for r in rounds]
        print(
            f"BACK TO BACK (each annotation the moment the previous version switched): "
            f"{', '.join(f'{x:.1f}' for x in back_to_back)} s; median {statistics.median(back_to_back):.1f} s, "
            f"against a median {statistics.median(latencies):.1f} s with the cleanup done and a median "
            f"{statistics.median(cleanups):.1f} s of cleanup that an inline delete would add",
            flush=True,
        )

        # Annotations while a cleanup deletes: one second after the previous switch, when its cleanup job (nothing
        # waiting) has begun deleting the older version's predictions, which Label Studio does in one request.
        wait_idle(redis, settings.rq_queue)
        during = []
        for _ in range(args.repeats):
            previous = version
            ls.annotations.create(id=unlabeled.pop(0), result=[LABELS.region("ok")])
            version = wait_switch(ls, project, stack.workers, since=previous)
            time.sleep(1.0)
            previous = version
            started = time.time()
            ls.annotations.create(id=unlabeled.pop(0), result=[LABELS.region("ok")])
            version = wait_switch(ls, project, stack.workers, since=previous)
            during.append(time.time() - started)
            wait_idle(redis, settings.rq_queue)
        print(
            f"DURING A DELETE (each annotation 1 s after a switch, its cleanup deleting, {len(stack.workers)} "
            f"worker(s)): {', '.join(f'{x:.1f}' for x in during)} s; median {statistics.median(during):.1f} s",
            flush=True,
        )

        # Reading from Label Studio, measured apart (the jobs' read_seconds holds both), and per-task costs.
        client = LabelStudioClient(stack.ls_url, stack.token)
        started = time.time()
        texts, _ = client.labeled(project, LABELS)
        read_labeled = time.time() - started
        started = time.time()
        tasks = client.unlabeled(project, LABELS)
        read_unlabeled = time.time() - started
        print(
            f"reading from Label Studio, timed here: {len(texts)} labeled tasks {read_labeled:.2f} s, "
            f"{len(tasks)} unlabeled tasks {read_unlabeled:.2f} s",
            flush=True,
        )
        per = len(tasks) / 1000
        median = {k: statistics.median(r[k] for r in rounds) for k in ("score", "write", "cleanup_wall", "tasks")}
        print(
            f"per 1,000 unlabeled tasks (medians of the {args.repeats} rounds): reading {read_unlabeled / per:.2f} s, "
            f"scoring {median['score'] / per:.2f} s; per round, whatever the pool: writing the window of "
            f"{median['tasks']:.0f} predictions {median['write']:.2f} s, deleting the older one (cleanup job) "
            f"{median['cleanup_wall']:.2f} s",
            flush=True,
        )
    finally:
        stack.stop()


def import_into_connected(ls, project: int, stack: LocalStack, redis, settings: Settings, version: str, n: int):
    """N more tweets imported into the connected project, as the Data Manager's import sends them: timed until the
    worker's score_new_tasks job has written their window (the moment they are in the queue)."""
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    pool = read("tweets_pool.csv", ["text"])
    tasks = [{"data": {"text": r["text"]}} for r in cycle(pool, n)]
    wait_idle(redis, settings.rq_queue)
    queue = Queue(settings.rq_queue, connection=redis)
    before = set(FinishedJobRegistry(queue=queue).get_job_ids())
    started = time.time()
    response = requests.post(
        f"{stack.ls_url}/api/projects/{project}/import",
        json=tasks,
        headers={"Authorization": f"Token {stack.token}"},
        timeout=3600,
    )
    response.raise_for_status()
    imported = time.time() - started
    deadline, written = time.time() + 1800, 0
    while written < n and time.time() < deadline:
        fresh = [
            j
            for j in queue.job_class.fetch_many(
                list(set(FinishedJobRegistry(queue=queue).get_job_ids()) - before), connection=redis
            )
            if j is not None and (j.func_name or "").endswith("score_new_tasks")
        ]
        written = sum(answer(j).get("tasks", 0) for j in fresh)
        time.sleep(0.25)
    in_queue = time.time() - started
    counts = LabelStudioClient(stack.ls_url, stack.token).model_versions(project)
    print(
        f"IMPORT INTO A CONNECTED PROJECT: {n} tweets; Label Studio's import answered in {imported:.1f} s; their "
        f"window in the queue {in_queue:.1f} s after the import began ({written} tasks scored by score_new_tasks "
        f"jobs: {[answer(j) for j in fresh]}); predictions of {version} in Label Studio: {counts.get(version)}",
        flush=True,
    )


def full_tier(args) -> None:
    from rq.job import Job

    workers = 2
    threads = max(1, (os.cpu_count() or 1) // workers)  # the cores split between the workers, as the README advises
    env = {
        "MODEL_KINDS": "linear,transformer",
        "TRANSFORMER_EVERY": str(10**6),
        "RETRAIN_EVERY": "1",
        "TORCH_THREADS": str(threads),
    }
    stack = new_stack(args.label_studio, env, "bench-full-")
    try:
        stack.start()
        while len(stack.workers) < workers:
            stack.start_worker()
        assert stack.redis_url is not None  # start() set it
        settings = Settings(redis_url=stack.redis_url)
        redis = connect(settings)
        ls, project, unlabeled = new_project(stack, args)
        print(
            f"\n== full tier: MODEL_KINDS=linear,transformer, TRANSFORMER_EVERY=10**6, RETRAIN_EVERY=1, "
            f"{workers} workers x TORCH_THREADS={threads} (a fast run must not queue behind the full run: RQ "
            f"runs one job per worker) ==",
            flush=True,
        )
        time.sleep(10)  # let the workers finish importing torch before the clock starts
        started = time.time()
        full_job = start_training(stack, project)
        if full_job is None:
            raise RuntimeError("Start Training queued no job")
        while ((job := Job.fetch(full_job, connection=redis)).meta.get("step") or 0) < 5:  # the transformer trains
            if job.get_status() in ("finished", "failed", "stopped") or time.time() - started > 600:
                raise RuntimeError(f"the full run trained no transformer: {job.get_status()} {job.return_value()}")
            time.sleep(0.5)
        print(f"full run {full_job} is training the transformer after {time.time() - started:.1f} s", flush=True)

        annotated = time.time()
        ls.annotations.create(id=unlabeled.pop(0), result=[LABELS.region("ok")])
        fast_version = wait_switch(ls, project, stack.workers)
        fast_done = time.time()
        job = Job.fetch(full_job, connection=redis)
        status, meta = getattr(job.get_status(), "value", job.get_status()), job.meta
        parts = jobs_of(redis, settings.rq_queue, fast_version)
        print(
            f"FAST RUN DURING THE FULL RUN: {fast_done - annotated:.1f} s from the annotation until the project "
            f"uses {fast_version} ({parts['tier']} tier); the full run was then {status} at step "
            f"{meta.get('step')}/{meta.get('max_steps')}; {describe(parts)}",
            flush=True,
        )

        while (status := Job.fetch(full_job, connection=redis).get_status()) not in ("finished", "failed", "stopped"):
            if any(w.poll() is not None for w in stack.workers):
                raise RuntimeError("a worker died; see worker.log")
            time.sleep(1)
        result = Job.fetch(full_job, connection=redis).return_value() or {}
        if status != "finished" or not result.get("version"):
            raise RuntimeError(f"the full run ended {status}: {result}")
        wait_switch(ls, project, stack.workers, result["version"])
        done = time.time()
        parts = jobs_of(redis, settings.rq_queue, result["version"])
        print(
            f"FULL RUN LATENCY (Start Training until the project uses {result['version']}; {args.labeled} labeled, "
            f"{args.unlabeled} unlabeled): {done - started:.1f} s; {describe(parts)}",
            flush=True,
        )
    finally:
        stack.stop()


def webhook_only() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    redis_server = RedisServer(work).start()
    secret = secrets.token_hex(24)
    env = {"MODEL_DIR": str(work / "models"), "REDIS_URL": redis_server.url, "HF_HUB_OFFLINE": "1"}
    env["WEBHOOK_SECRET"] = secret
    try:
        for workers, every in (("1", "1"), ("1", "10"), ("2", "1"), ("2", "10")):
            overrides = {"RETRAIN_EVERY": every, "WORKERS": workers}
            proc, backend = start_backend({**env, **overrides}, free_port(), work / "backend.log")
            try:
                p50, p99 = webhook_latency(backend, secret)
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
    parser.add_argument("--repeats", type=int, default=3, help="annotations timed in the fast tier")
    parser.add_argument("--tiers", default="fast,full", help="fast and/or full")
    parser.add_argument("--fast-workers", type=int, default=1, help="RQ workers of the fast tier (make run: 1)")
    parser.add_argument("--label-studio", default=label_studio_bin())
    parser.add_argument("--webhook-only", action="store_true", help="only Redis and the backend: webhook latency")
    parser.add_argument("--import-tweets", type=int, default=0, help="then import this many into the project, timed")
    parser.add_argument("--postgres", default="", help="Label Studio on a new database of user@host:port")
    parser.add_argument("--only-rounds", action="store_true", help="fast tier: the first version and REPEATS rounds")
    args = parser.parse_args()
    # `timeout` and Ctrl-C must still stop the processes started here (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.webhook_only:
        return webhook_only()
    tiers = args.tiers.split(",")
    try:
        if "fast" in tiers:
            fast_tier(args)
        if "full" in tiers:
            full_tier(args)
    finally:
        for login, name in DATABASES:
            subprocess.run([*login, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)


if __name__ == "__main__":
    main()
