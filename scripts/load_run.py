"""Load run (issue 12): ANNOTATORS simulated annotators label tweets for DURATION seconds in a real Label Studio
against the local stack `make run` starts (Redis, Label Studio, the backend under gunicorn, one RQ worker:
backend.stack.launcher.LocalStack, on free ports in a temporary folder), or against a running stack.

    .venv/bin/python scripts/load_run.py [--annotators 20] [--duration 300] [--think 5,10] [--pool CSV] [--out F]
    .venv/bin/python scripts/load_run.py --label-studio-url URL --token T --backend-url URL --webhook-secret S
    (a running stack's backend login from BASIC_AUTH_USER / BASIC_AUTH_PASS, in the environment or .env)

The project is made as setup-project makes it (the webhook with the secret, Uncertainty sampling): the demo's
labeled tweets as annotations, to bootstrap a first model, and the demo pool (or --pool, a CSV with `text`) as
unlabeled tasks, repeated until no annotator can run out of them. The run starts once the first version serves.

Each annotator is a Label Studio user of its own (signed up through the organization's invite link, as a team
member would be), so that Label Studio's task locks and uncertainty sampling hand each one its own task. It loops:
asks Label Studio for its next task (the labeling stream's GET /api/projects/ID/next), asks the backend's
/predict for that one task as Label Studio does when a task opens, thinks THINK seconds (uniform), accepts the
model's guess 9 times in 10 (the other class otherwise; without a guess "xenófobo" 15% of the time), and
submits the annotation through Label Studio's API: Label Studio then sends the real ANNOTATION_CREATED webhook to
the backend itself, with the secret. Label Studio does not time that delivery for us, so the annotator also
posts the same event directly to /webhook, timed; the backend therefore counts two events per label (the worker is
busy all the time at this rate, so runs coalesce either way).

Per route: count, errors (non-2xx or exceptions), p50, p99 and max latency; Label Studio's own webhook deliveries
from the backend's /metrics (by status) and its log. Then the training runs (RQ's registries), the versions
promoted (/versions) and how far the project's model_version lagged behind the labels. Prints a table, writes
the figures as JSON (--out), exits 1 when any error occurred. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import requests  # noqa: E402
from benchmark_loop import new_stack, pct  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from rq.job import Job  # noqa: E402
from tqdm import tqdm  # noqa: E402

from backend.labelstudio.label_config import default_label_config, parse_label_config  # noqa: E402
from backend.labelstudio.project_setup import request_training, setup_project, webhook_headers  # noqa: E402
from backend.retraining.policy import FAST, FULL, TRAIN_FUNC, RetrainPolicy  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import read_demo  # noqa: E402
from backend.stack.launcher import label_studio_bin  # noqa: E402
from backend.tables import read_csv  # noqa: E402

LABELS = parse_label_config(default_label_config())
WEBHOOK_LIMIT = 1.0  # Label Studio gives up on a webhook after 1 s (WEBHOOK_TIMEOUT)


class Routes:
    """Every timed call of every thread, per route: seconds, and what went wrong."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def call(self, route: str, send) -> requests.Response | None:
        """`send()` timed; the answer when it is 2xx, else None (the error recorded)."""
        started = time.perf_counter()
        try:
            answer = send()
            problem = None if answer.ok else f"{answer.status_code} {answer.text[:300]}"
        except requests.RequestException as exc:
            answer, problem = None, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        with self.lock:
            self.seconds[route].append(elapsed)
            if problem:
                self.errors[route].append(f"{time.strftime('%H:%M:%S')} {problem}")
        return answer if problem is None else None

    def table(self) -> dict:
        return {
            route: {
                "count": len(seconds),
                "errors": len(self.errors[route]),
                "p50_ms": round(pct(seconds, 50), 1),
                "p99_ms": round(pct(seconds, 99), 1),
                "max_ms": round(max(seconds) * 1000, 1),
                "first_errors": self.errors[route][:5],
            }
            for route, seconds in self.seconds.items()
        }


class Run:
    """The project under load and what the threads observe."""

    def __init__(self, args, ls_url: str, token: str, backend_url: str, secret: str, auth: tuple[str, str] | None):
        self.args, self.ls_url, self.token, self.backend_url, self.secret = args, ls_url, token, backend_url, secret
        self.auth = auth  # the backend's login
        self.admin = {"Authorization": f"Token {token}"}
        self.routes = Routes()
        self.stop = threading.Event()  # the annotators stop
        self.done = threading.Event()  # the monitor stops
        self.labels: dict[int, float] = {}  # task id: when its first annotation of the run was made
        self.annotations = 0  # more than labeled tasks when Label Studio hands one task to several annotators
        self.samples: list[tuple[float, str]] = []  # (time, the project's model_version), once a second
        self.versions: dict[str, dict] = {}  # /versions' details of every version seen, by name
        self.current = ""  # the version the backend serves the project
        self.project = 0
        self.uid = ""  # "<id>.<created_at>", as Label Studio names the project to the backend
        self.bootstrap = 0
        # The simulated annotators' accounts: new ones each run, with a password no one knows (they may be made
        # in a Label Studio that outlives the run).
        self.tag, self.password = secrets.token_hex(3), secrets.token_urlsafe(18)

    def create_project(self) -> None:
        """As setup-project does it, plus a first training as `make run` asks for the demo project."""
        from label_studio_sdk import LabelStudio

        ls = LabelStudio(base_url=self.ls_url, api_key=self.token, timeout=600)
        labeled = read_demo("tweets_labeled.csv")
        pool = read_csv(Path(self.args.pool), ["text"]) if self.args.pool else read_demo("tweets_pool.csv")
        think = float(self.args.think.split(",")[0])
        # Enough that every annotator could label at its fastest for the whole run without running out.
        unlabeled = self.args.tasks or max(len(pool), int(self.args.annotators * self.args.duration / think) + 100)
        rows = [{"id": f"labeled-{i}", **r} for i, r in enumerate(labeled)]
        rows += [{"id": f"pool-{i}", "text": pool[i % len(pool)]["text"]} for i in range(unlabeled)]
        title = f"Load run {datetime.now():%Y-%m-%d %H:%M:%S}"
        report = setup_project(
            ls,
            title=title,
            label_config=default_label_config(),
            rows=rows,
            backend_url=self.backend_url,
            retrieve=False,
            backend_auth=self.auth,
            webhook_secret=self.secret,
        )
        self.project, self.bootstrap = report.project, report.annotated
        created = ls.projects.get(id=self.project).created_at
        self.uid = f"{self.project}.{int(created.timestamp())}" if created else str(self.project)
        print(f"project {self.project} ({title}): {report.annotated} labeled + {unlabeled} unlabeled tasks", flush=True)
        request_training(self.backend_url, self.project, webhook_secret=self.secret)

    def project_version(self) -> str:
        answer = self.routes.call(
            "label studio: GET project (poll)",
            lambda: requests.get(f"{self.ls_url}/api/projects/{self.project}", headers=self.admin, timeout=60),
        )
        return (answer.json().get("model_version") or "") if answer else ""

    def poll_versions(self) -> None:
        answer = self.routes.call(
            "backend: /versions (poll)",
            lambda: requests.get(
                f"{self.backend_url}/versions", params={"project": self.project}, auth=self.auth, timeout=30
            ),
        )
        for detail in answer.json().get("details", []) if answer else []:
            self.versions.setdefault(detail["version"], detail)
        self.current = (answer.json().get("current") or "") if answer else self.current

    def wait_first_version(self, timeout: float = 600) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.poll_versions()
            version = self.project_version()
            if version in self.versions:
                return version
            time.sleep(1)
        raise TimeoutError(f"project {self.project} got no first version in {timeout:.0f} s")

    def settle(self, policy: RetrainPolicy | None, timeout: float) -> float | None:
        """Seconds until the loop is idle (no training queued, running or due for the project, and the project
        uses the version the backend serves); None if it is not within `timeout`. Without Redis: the latter."""
        started = time.time()
        while time.time() - started < timeout:
            self.poll_versions()
            states = [policy.state(self.project, tier) for tier in (FAST, FULL)] if policy else []
            busy = any(state[key] for state in states for key in ("queued", "running", "rerun"))
            if not busy and self.current and self.project_version() == self.current:
                return round(time.time() - started, 1)
            time.sleep(1)
        return None

    def annotator_token(self, n: int) -> str:
        """Annotator n's API token, once it has signed up through the organization's invite link."""
        invite = requests.get(f"{self.ls_url}/api/invite", headers=self.admin, timeout=60)
        invite.raise_for_status()
        email = f"annotator{n}-{self.tag}@load-run.example.com"
        page = f"{self.ls_url}/user/signup/?token={invite.json()['token']}"
        session = requests.Session()
        session.get(page, timeout=60)  # sets the CSRF cookie
        form = {"email": email, "password": self.password, "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")}
        session.post(page, data=form, headers={"Referer": page}, timeout=60)
        answer = session.get(f"{self.ls_url}/api/current-user/token", timeout=60)
        if not answer.ok:
            raise RuntimeError(f"{email} could not sign up to Label Studio: {answer.status_code} {answer.text[:200]}")
        return answer.json()["token"]

    def annotate(self, n: int, token: str) -> None:
        rng = random.Random(n)
        low, high = (float(x) for x in self.args.think.split(","))
        ls = requests.Session()
        ls.headers["Authorization"] = f"Token {token}"
        # A new connection per call, as Label Studio's ML client and webhook sender make them: a connection kept
        # idle for about gunicorn's keepalive (2 s) can be closed by the server as the next request arrives, a reset
        # that a client reusing connections sees under load (1 of 477 /predict calls in an earlier full run).
        backend = requests
        config = default_label_config()
        while not self.stop.is_set():
            answer = self.routes.call(
                "label studio: next task", lambda: ls.get(f"{self.ls_url}/api/projects/{self.project}/next", timeout=60)
            )
            if answer is None:
                self.stop.wait(1)
                continue
            task = {k: v for k, v in answer.json().items() if k != "queue"}
            body = {
                "tasks": [task],
                "project": self.uid,
                "label_config": config,
                "params": {"login": None, "password": None, "context": None},
            }
            answer = self.routes.call(
                "backend: /predict",
                lambda b=body: backend.post(f"{self.backend_url}/predict", json=b, auth=self.auth, timeout=100),
            )
            results = answer.json().get("results") if answer else None
            slot = results[0] if results else None
            guess = LABELS.choice_in(slot.get("result") or []) if isinstance(slot, dict) else None
            if guess is None:
                label = LABELS.classes[1] if rng.random() < 0.15 else LABELS.classes[0]
            elif rng.random() < 0.1:
                label = next(c for c in LABELS.classes if c != guess)
            else:
                label = guess
            think = rng.uniform(low, high)
            if self.stop.wait(think):
                break  # the run is over: the task is left as it is, as an annotator leaving would
            made = {"result": [LABELS.region(label)], "lead_time": think}
            answer = self.routes.call(
                "label studio: create annotation",
                lambda t=task["id"], a=made: ls.post(f"{self.ls_url}/api/tasks/{t}/annotations/", json=a, timeout=60),
            )
            if answer is None:
                continue
            with self.routes.lock:
                self.labels.setdefault(task["id"], time.time())
                self.annotations += 1
            event = {"action": "ANNOTATION_CREATED", "annotation": answer.json(), "task": task}
            event["project"] = {"id": self.project}
            self.routes.call(
                "backend: /webhook",
                lambda e=event: backend.post(
                    f"{self.backend_url}/webhook", json=e, headers=webhook_headers(None, self.secret), timeout=30
                ),
            )

    def monitor(self) -> None:
        """The project's model_version every second, /versions every 2 (both are load too, and timed)."""
        tick = 0
        while not self.done.is_set():
            if tick % 2 == 0:
                self.poll_versions()
            version = self.project_version()
            if version:
                self.samples.append((time.time(), version))
            tick += 1
            self.done.wait(1)


def metrics(backend_url: str, auth: tuple[str, str] | None) -> dict:
    """/webhook answers by status, and the loop's decisions by action, from the backend's /metrics."""
    text = requests.get(f"{backend_url}/metrics", auth=auth, timeout=30).text
    found: dict = {"webhook_status": Counter(), "decisions": Counter()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ml_backend_requests_total" and sample.labels.get("route") == "/webhook":
                found["webhook_status"][sample.labels["status"]] += int(sample.value)
            if sample.name == "ml_backend_webhooks_total":
                found["decisions"][f"{sample.labels['action']} {sample.labels['decision']}"] += int(sample.value)
    return found


def _project_jobs(redis_url: str, project: int) -> Iterator[tuple[Job, bool]]:
    """(job, whether it failed) for the project's jobs in RQ's finished and failed registries."""
    from redis import Redis
    from rq import Queue
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    queue = Queue(Settings(redis_url=redis_url).rq_queue, connection=Redis.from_url(redis_url))
    for registry in (FinishedJobRegistry(queue=queue), FailedJobRegistry(queue=queue)):
        for job in queue.job_class.fetch_many(registry.get_job_ids(), connection=queue.connection):
            if job is not None and job.kwargs.get("project") == project:
                yield job, isinstance(registry, FailedJobRegistry)


def training_runs(redis_url: str, project: int, before: set[str]) -> tuple[dict, list[str], set[str]]:
    """(runs by tier and outcome, the failed jobs' last lines, every job id seen) of the project's training jobs
    in RQ's finished and failed registries, leaving out the ids in `before`."""
    outcome: Counter[str] = Counter()
    failures, seen = [], set()
    for job, failed in _project_jobs(redis_url, project):
        seen.add(job.id)
        if job.id in before:
            continue
        if failed:
            failures.append(f"{job.func_name}: {((job.exc_info or '').strip().splitlines() or [''])[-1]}")
        if job.func_name == TRAIN_FUNC:
            status = "failed" if failed else (job.return_value() or {}).get("status")
            outcome[f"{job.kwargs.get('tier')} {status}"] += 1
    return dict(outcome), failures, seen


def worker_time(redis_url: str, project: int, started: float, ended: float) -> dict[str, float]:
    """{job function: share of the labeling time the workers spent in the project's jobs of it}, from the start and
    end RQ records of finished and failed jobs (read as the labels stop: RQ forgets a cleanup's after 500 s)."""
    seconds: dict[str, float] = {}
    for job, _ in _project_jobs(redis_url, project):
        if job.started_at and job.ended_at:
            begun, done = job.started_at.timestamp(), job.ended_at.timestamp()
            name = (job.func_name or "?").rsplit(".", 1)[-1]
            seconds[name] = seconds.get(name, 0.0) + max(0.0, min(done, ended) - max(begun, started))
    return {name: round(s / (ended - started), 3) for name, s in sorted(seconds.items(), key=lambda i: -i[1])}


def lag(run: Run, started: float, ended: float) -> dict:
    """How far the project's model_version was behind the labels: labeled tasks it had not learned (at each poll),
    and per labeled task the seconds until the project's version had been trained on at least that many (a
    version's `labels` counts labeled tasks)."""
    learned = {name: d.get("labels") or 0 for name, d in run.versions.items()}
    firsts = sorted(run.labels.values())
    behind = []
    for t, version in run.samples:
        if started <= t <= ended:
            made = run.bootstrap + sum(1 for x in firsts if x <= t)
            behind.append(made - learned.get(version, 0))
    waits, never = [], 0
    for k, made_at in enumerate(firsts, start=1):
        when = next((t for t, v in run.samples if t >= made_at and learned.get(v, 0) >= run.bootstrap + k), None)
        if when is None:
            never += 1
        else:
            waits.append(when - made_at)
    switches = [t for (t, v), (_, w) in zip(run.samples[1:], run.samples, strict=False) if v != w and t >= started]
    gaps = [b - a for a, b in zip(switches, switches[1:], strict=False)]
    return {
        "labels_behind_p50": statistics.median(behind) if behind else None,
        "labels_behind_max": max(behind) if behind else None,
        "label_to_model_p50_s": round(statistics.median(waits), 1) if waits else None,
        "label_to_model_p99_s": round(pct(waits, 99) / 1000, 1) if waits else None,
        "label_to_model_max_s": round(max(waits), 1) if waits else None,
        "labels_not_learned_by_the_end": never,
        "switches": len(switches),
        "seconds_between_switches_p50": round(statistics.median(gaps), 1) if gaps else None,
    }


def ls_log(log: Path | None, offset: int, port: str) -> dict:
    """What Label Studio logged since `offset`: its failed webhook deliveries to the backend (it logs the
    exception), the requests it answered only after retrying them on SQLite's "database is locked" (its default
    database; a middleware retries them with backoff), and its task-lock warnings (a task taken by more
    annotators than its overlap)."""
    if log is None or not log.exists():
        return {}
    with log.open(errors="replace") as handle:
        handle.seek(offset)
        lines = handle.read().splitlines()
    return {
        "webhook_delivery_errors": [line[:300] for line in lines if line.startswith("[") and f"port={port})" in line],
        "database_locked_retries": sum(
            1 for line in lines if "custom_exception_handler" in line and "is locked" in line
        ),
        "task_lock_warnings": sum(1 for line in lines if "Num takes=" in line),
    }


def load(
    args,
    ls_url: str,
    token: str,
    backend_url: str,
    secret: str,
    auth: tuple[str, str] | None,
    redis_url: str | None,
    log: Path | None,
):
    run = Run(args, ls_url, token, backend_url, secret, auth)
    run.create_project()
    first = run.wait_first_version()
    print(f"first version serving: {first}; signing up {args.annotators} annotators", flush=True)
    tokens = [run.annotator_token(n) for n in range(args.annotators)]
    policy = RetrainPolicy.from_settings(Settings(redis_url=redis_url)) if redis_url else None
    run.settle(policy, 600)  # the first run ends (after the switch it still cleans up)
    run.routes = Routes()  # the figures are the run's, not the set-up's
    at_start = set(run.versions)
    jobs_before = training_runs(redis_url, run.project, set())[2] if redis_url else set()
    metrics_before = metrics(backend_url, auth)
    log_offset = log.stat().st_size if log and log.exists() else 0

    monitor = threading.Thread(target=run.monitor, daemon=True)
    monitor.start()
    annotators = [threading.Thread(target=run.annotate, args=(n, t), daemon=True) for n, t in enumerate(tokens)]
    started = time.time()
    for thread in annotators:
        thread.start()
    every = 1 if sys.stdout.isatty() else 15  # a line per 15 s in a log file
    bar = tqdm(total=int(args.duration), unit="s", desc=f"{args.annotators} annotators", mininterval=every)
    with bar:
        while bar.n < int(args.duration):
            time.sleep(max(0.0, started + bar.n + 1 - time.time()))
            errors = sum(len(e) for e in run.routes.errors.values())
            version = (run.samples or [(0, "-")])[-1][1]
            bar.set_postfix(labels=run.annotations, errors=errors, version=version, refresh=False)
            bar.update(1)
    run.stop.set()
    for thread in annotators:
        thread.join(timeout=120)
    ended = time.time()
    print(f"{run.annotations} labels in {ended - started:.0f} s; waiting up to {args.drain:.0f} s for the loop")
    busy = worker_time(redis_url, run.project, started, ended) if redis_url else "unknown (no --redis-url)"
    settled = run.settle(policy, args.drain)
    run.done.set()
    monitor.join(timeout=60)

    after = metrics(backend_url, auth)
    statuses = after["webhook_status"] - metrics_before["webhook_status"]
    ours = Counter({"200": len(run.routes.seconds["backend: /webhook"]) - len(run.routes.errors["backend: /webhook"])})
    from_ls = statuses - ours  # what Label Studio delivered (the direct posts taken out)
    logged = ls_log(log, log_offset, backend_url.rsplit(":", 1)[1])
    delivery_errors = logged.pop("webhook_delivery_errors", [])
    runs, failures, _ = training_runs(redis_url, run.project, jobs_before) if redis_url else ({}, [], set())
    figures = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "annotators": args.annotators,
        "duration_s": round(ended - started, 1),
        "think_s": args.think,
        "project": run.project,
        "tasks": {"bootstrap_labels": run.bootstrap, "annotations": run.annotations, "tasks_labeled": len(run.labels)},
        "labels_per_s": round(run.annotations / (ended - started), 2),
        "routes": run.routes.table(),
        "webhooks_from_label_studio": {
            "by_status": dict(from_ls),
            "non_2xx": sum(n for s, n in from_ls.items() if not s.startswith("2")),
            "delivery_errors_in_its_log": delivery_errors[:5],
            "delivery_errors_count": len(delivery_errors),
        },
        "label_studio_log": logged or "not read (a running stack)",
        "direct_webhooks_over_1s": sum(1 for s in run.routes.seconds["backend: /webhook"] if s > WEBHOOK_LIMIT),
        "webhook_decisions": dict(after["decisions"] - metrics_before["decisions"]),
        "training_runs": runs if redis_url else "unknown (no --redis-url)",
        "failed_jobs": failures,
        "worker_time_share": busy,
        "versions_promoted": [v for v in run.versions if v not in at_start],
        "model_lag": {
            **lag(run, started, ended),
            # The loop trains every RETRAIN_EVERY events: the last few labels wait for the next ones.
            "loop_idle_after_run_s": settled,
            "final_version": run.current,
            "labels_final_version_learned": (run.versions.get(run.current) or {}).get("labels", 0) - run.bootstrap,
        },
    }
    return figures


def report(figures: dict) -> int:
    print(f"\n{'route':34} {'count':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for route, r in figures["routes"].items():
        print(f"{route:34} {r['count']:6} {r['errors']:6} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f}")
        for line in r["first_errors"]:
            print(f"    {line}")
    hooks = figures["webhooks_from_label_studio"]
    print(
        f"webhooks Label Studio delivered: {hooks['by_status']} (non-2xx {hooks['non_2xx']}; failed deliveries in its "
        f"log {hooks['delivery_errors_count']}); direct posts over Label Studio's 1 s: "
        f"{figures['direct_webhooks_over_1s']}"
    )
    tasks = figures["tasks"]
    print(
        f"annotations: {tasks['annotations']} ({figures['labels_per_s']}/s) on {tasks['tasks_labeled']} tasks; "
        f"Label Studio's log: {figures['label_studio_log']}"
    )
    print(f"webhook decisions: {figures['webhook_decisions']}")
    print(f"training runs: {figures['training_runs']}; failed jobs: {figures['failed_jobs'] or 'none'}")
    print(f"share of the labeling time the worker(s) spent in each job: {figures['worker_time_share']}")
    print(f"versions promoted during the run: {len(figures['versions_promoted'])}; model lag: {figures['model_lag']}")
    errors = sum(r["errors"] for r in figures["routes"].values()) + hooks["non_2xx"] + hooks["delivery_errors_count"]
    print(f"ERRORS: {errors}" + (f" + {len(figures['failed_jobs'])} failed jobs" if figures["failed_jobs"] else ""))
    return 1 if errors or figures["failed_jobs"] else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--duration", type=float, default=300, help="seconds of labeling")
    parser.add_argument("--think", default="5,10", help="seconds an annotator spends on a task: min,max (uniform)")
    parser.add_argument("--pool", help="CSV of unlabeled tweets (`text`), e.g. ../shared/data/tweets_pool.csv")
    parser.add_argument("--tasks", type=int, default=0, help="unlabeled tasks (0: enough for the run)")
    parser.add_argument("--drain", type=float, default=180, help="seconds to wait after the run for the model")
    parser.add_argument("--out", default="out/load-run.json", help="the figures as JSON")
    parser.add_argument("--label-studio", default=label_studio_bin(), help="the binary, for the stack started here")
    parser.add_argument("--label-studio-url", help="a running stack: Label Studio's URL (with --token)")
    parser.add_argument("--token", default=os.environ.get("LABEL_STUDIO_API_KEY"), help="its API token")
    parser.add_argument("--backend-url", help="a running stack: the backend's URL")
    parser.add_argument("--webhook-secret", default=os.environ.get("WEBHOOK_SECRET", ""))
    parser.add_argument("--redis-url", help="a running stack's Redis, to count training runs")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # each line shows at once in a log file
    # `timeout` and Ctrl-C must still stop the processes started here (the finally block).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = None
    target: tuple[str, str, str, str, tuple[str, str] | None, str | None, Path | None]
    try:
        if args.label_studio_url or args.backend_url:
            if not (args.label_studio_url and args.backend_url and args.token):
                parser.error("a running stack needs --label-studio-url, --backend-url and --token")
            backend = (args.backend_url, args.webhook_secret, Settings().basic_auth)
            target = (args.label_studio_url, args.token, *backend, args.redis_url, None)
        else:
            stack = new_stack(args.label_studio, {}, "load-run-").start()  # the settings of `make run`
            log = stack.folder / "label-studio" / "label-studio.log"
            target = (
                stack.ls_url,
                stack.token,
                stack.backend_url,
                stack.webhook_secret,
                stack.backend_auth,
                stack.redis_url,
                log,
            )
            print(f"stack in {stack.folder}", flush=True)
        figures = load(args, *target)
    finally:
        if stack is not None:
            stack.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"figures written to {args.out}")
    sys.exit(report(figures))


if __name__ == "__main__":
    main()
