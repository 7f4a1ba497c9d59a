"""`python -m backend smoke`: is the stack up and wired together? One check per line, in plain words, each failure
with how to fix it; exit status 0 when every check passed.

    backend      /health answers (UP, or DEGRADED and why) and its instance id; /versions with BASIC_AUTH_*;
                 /webhook with WEBHOOK_SECRET (an event it ignores)
    Redis        REDIS_URL reachable and its password accepted (shown masked); a worker on RQ_QUEUE; the figures
    Label Studio LABEL_STUDIO_URL answers; LABEL_STUDIO_API_KEY works (a legacy token refused says so)
    projects     --project ID, else every project with this backend connected: the connection is this backend
                 (its /health instance id) and Label Studio sees it connected (SSRF flags), the webhook carries
                 the secret, the project's model_version is the version the backend serves, with predictions
    --train      a Start Training round trip through the queue and a worker, waited for (TRAIN_WAIT seconds)

It reads the backend's settings (environment, `.env`, and after `make run` the `.stack/backend.env` the launcher
writes: Redis's port is chosen at start). A check that needs one that failed is skipped and says so. Run it where
the worker runs: it reaches the backend at the URL Label Studio has, as the worker must (docker compose: in the
worker's container).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from dotenv import dotenv_values
from redis import Redis
from redis.exceptions import RedisError

from .errors import BackendError
from .labelstudio.client import LabelStudioClient, as_dict
from .labelstudio.project_setup import (
    WEBHOOK_HEADER,
    WEBHOOK_USER,
    backend_instance,
    request_training,
    webhook_headers,
)
from .retraining.policy import check_credentials, connect
from .settings import Settings, redact
from .stack.launcher import BACKEND_ENV, ROOT

TIMEOUT = 10  # seconds per HTTP call
TRAIN_WAIT = 120  # seconds --train waits for its job
OK, FAIL, SKIP = "ok", "FAIL", "skip"
SSRF_FIX = "start Label Studio with ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false (make run and compose do)"


@dataclass
class Result:
    status: str  # OK, FAIL or SKIP
    detail: str
    fix: str = ""
    blocking: bool = True  # a failure that leaves what depends on the check still worth checking: False


def ok(detail: str) -> Result:
    return Result(OK, detail)


def fail(detail: str, fix: str = "", *, blocking: bool = True) -> Result:
    return Result(FAIL, detail, fix, blocking)


@dataclass
class Smoke:
    """What the checks learn and pass on to the checks after them."""

    settings: Settings
    backend_url: str
    instance: str | None = None  # the backend's /health instance id
    redis: Redis | None = None
    ls: LabelStudioClient | None = None
    connections: dict[int, dict] = field(default_factory=dict)  # project -> this backend's ML connection
    serving: dict[int, str] = field(default_factory=dict)  # project -> the version the backend serves it
    _instances: dict[str, str] = field(default_factory=dict)  # URL -> instance id, or what answered there

    def instance_at(self, url: str) -> str:
        """The instance id that `url`'s /health answers, or what is there instead (as the worker asks)."""
        url = url.rstrip("/")
        if url not in self._instances:
            self._instances[url] = backend_instance(url, timeout=TIMEOUT)
        return self._instances[url]


def _json(answer: requests.Response) -> dict:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- the backend ---------------------------------------------------------------------------------------------


def check_backend(s: Smoke) -> Result:
    try:
        answer = requests.get(f"{s.backend_url}/health", timeout=TIMEOUT)
    except requests.RequestException as exc:
        return fail(
            f"no answer at {s.backend_url} ({type(exc).__name__})",
            "start it (`make run`, `docker compose up -d`, `python -m backend serve`), or pass --backend-url",
        )
    body = _json(answer)
    if answer.status_code != 200 or body.get("status") not in ("UP", "DEGRADED"):
        return fail(f"{s.backend_url}/health answered {answer.status_code}: not this backend", "check --backend-url")
    s.instance = body.get("instance")
    if not s.instance:
        return fail(
            f"{body['status']} but without an instance id: MODEL_DIR is not writable",
            "give the backend a writable MODEL_DIR",
        )
    if body["status"] == "DEGRADED":
        reasons = "; ".join(f"{scope}: {why}" for scope, why in (body.get("degraded") or {}).items())
        return fail(
            f"DEGRADED (instance {s.instance}): {reasons}",
            "`python -m backend versions` lists the versions; `rollback --to` one that loads, or press Start Training",
            blocking=False,
        )
    return ok(f"UP (instance {s.instance})")


def check_backend_auth(s: Smoke) -> Result:
    auth = s.settings.basic_auth
    answer = requests.get(f"{s.backend_url}/versions", auth=auth, timeout=TIMEOUT)
    if answer.status_code == 401:
        if auth:
            return fail(
                "the backend refused BASIC_AUTH_USER/BASIC_AUTH_PASS (401): they differ from the backend's",
                "set the BASIC_AUTH_USER and BASIC_AUTH_PASS the backend runs with (.env)",
            )
        return fail(
            "the backend asks for basic auth (401) and BASIC_AUTH_USER is not set here",
            "set the BASIC_AUTH_USER and BASIC_AUTH_PASS the backend runs with (.env)",
        )
    if answer.status_code != 200:
        return fail(f"/versions answered {answer.status_code}: {answer.text[:200]}", "see the backend's log")
    how = "with basic auth" if auth else "no basic auth"
    return ok(f"answers ({how}); projects without a version of their own get {_json(answer).get('current')}")


def check_webhook_secret(s: Smoke) -> Result:
    """An event the backend ignores, sent as Label Studio's webhooks send them (the secret header alone, else the
    basic auth): is WEBHOOK_SECRET here the backend's?"""
    answer = requests.post(
        f"{s.backend_url}/webhook",
        json={"action": "SMOKE_CHECK"},
        headers=webhook_headers(s.settings.basic_auth, s.settings.secret),
        timeout=TIMEOUT,
    )
    if answer.status_code == 403:
        problem = "differs from the backend's" if s.settings.secret else "is not set here, and the backend has one"
        return fail(
            f"the backend refused the event (403): WEBHOOK_SECRET {problem}",
            "set the WEBHOOK_SECRET the backend runs with (make run: .stack/webhook-secret; compose: .env)",
        )
    if answer.status_code != 200:
        return fail(f"/webhook answered {answer.status_code}: {answer.text[:200]}", "see the backend's log")
    if not s.settings.secret and not s.settings.basic_auth:
        return ok("accepts events from anyone: neither WEBHOOK_SECRET nor basic auth is set (SECURITY.md)")
    return ok("accepts events " + ("with WEBHOOK_SECRET" if s.settings.secret else "with basic auth"))


# --- Redis and the workers -----------------------------------------------------------------------------------


def check_redis(s: Smoke) -> Result:
    url = redact(s.settings.redis_url)
    try:
        check_credentials(s.settings)  # a refused password, in the words serve and worker use
        connect(s.settings, fail_fast=True).ping()
    except BackendError as exc:
        return fail(str(exc), "put the password Redis runs with in REDIS_URL (REDIS_PASSWORD in .env)")
    except RedisError as exc:
        return fail(
            f"no answer from Redis at {url} ({exc})",
            "start Redis (`make run` and `docker compose up -d` do), or fix REDIS_URL's host and port",
        )
    s.redis = connect(s.settings)
    password = urlsplit(s.settings.redis_url).password is not None
    return ok(f"{url} answers" + (", password accepted" if password else " (no password: see SECURITY.md)"))


def check_workers(s: Smoke) -> Result:
    from rq import Queue, Worker

    assert s.redis is not None
    queue = Queue(s.settings.rq_queue, connection=s.redis)
    workers = Worker.all(queue=queue)
    failed = queue.failed_job_registry.count
    figures = f"{queue.count} job(s) waiting, {queue.started_job_registry.count} running, {failed} failed" + (
        " (rq-dashboard's failed list has their errors)" if failed else ""
    )
    if not workers:
        others = sorted({name for w in Worker.all(connection=s.redis) for name in w.queue_names()})
        elsewhere = f" (workers listen on {', '.join(others)}: RQ_QUEUE differs)" if others else ""
        return fail(
            f"no worker on queue {queue.name!r}{elsewhere}: trainings queue up but never run; {figures}",
            "start `python -m backend worker` (docker compose: the worker service) with this REDIS_URL and RQ_QUEUE; "
            "one just started registers once it has loaded (seconds): then run this again",
        )
    return ok(f"{len(workers)} worker(s) on queue {queue.name!r}; {figures}")


# --- Label Studio --------------------------------------------------------------------------------------------


def check_label_studio(s: Smoke) -> Result:
    url = s.settings.label_studio_url.rstrip("/")
    try:
        answer = requests.get(f"{url}/health", timeout=TIMEOUT)
        release = _json(requests.get(f"{url}/api/version", timeout=TIMEOUT)).get("release")
    except requests.RequestException as exc:
        return fail(
            f"no answer at {url} ({type(exc).__name__})",
            "start Label Studio, or fix LABEL_STUDIO_URL (docker compose: http://label-studio:8080)",
        )
    if answer.status_code != 200:
        return fail(f"{url}/health answered {answer.status_code}: is LABEL_STUDIO_URL Label Studio?")
    return ok(f"{url} answers (Label Studio {release or 'of unknown version'})")


TOKEN_FIX = (
    "put a token of Label Studio in LABEL_STUDIO_API_KEY: Account & Settings -> Personal Access Token, or the legacy "
    "token LABEL_STUDIO_USER_TOKEN made (make run: .stack/api-key; compose: .env)"
)


def check_token(s: Smoke) -> Result:
    from label_studio_sdk.core.api_error import ApiError

    if not s.settings.api_key:
        return fail("LABEL_STUDIO_API_KEY is not set: the worker cannot read labels", TOKEN_FIX)
    try:
        client = LabelStudioClient(s.settings.label_studio_url, s.settings.api_key, attempts=1, timeout=TIMEOUT)
        user = client.ls.users.whoami()
    except ApiError as exc:
        detail = str(exc.body.get("detail") if isinstance(exc.body, dict) else exc.body)[:200]
        if exc.status_code == 401 and "legacy token" in detail.lower():
            return fail(
                f"Label Studio refuses legacy tokens ({detail})",
                "start Label Studio with LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true (set before its organization is "
                "first created), or set LABEL_STUDIO_API_KEY to a personal access token (Account & Settings)",
            )
        if exc.status_code in (401, 403):
            return fail(
                f"Label Studio refused LABEL_STUDIO_API_KEY ({exc.status_code}: {detail}): wrong token", TOKEN_FIX
            )
        return fail(f"Label Studio answered {exc.status_code}: {detail}")
    except httpx.HTTPError as exc:
        return fail(f"Label Studio stopped answering ({type(exc).__name__})")
    s.ls = client
    return ok(f"LABEL_STUDIO_API_KEY works (user {user.email or user.username})")


# --- the projects --------------------------------------------------------------------------------------------


def find_projects(s: Smoke) -> Result:
    """Every project with this backend connected: one of its ML connections answers this instance id."""
    assert s.ls is not None
    seen: list[str] = []
    projects: Iterable[Any] = s.ls.ls.projects.list()
    for project in projects:
        for connection in map(as_dict, s.ls.ls.ml.list(project=project.id)):
            found = s.instance_at(connection["url"])
            if found == s.instance:
                s.connections.setdefault(project.id, connection)
            else:
                seen.append(f"project {project.id}: {connection['url']} is {found}")
    if not s.connections:
        elsewhere = f" ({'; '.join(seen[:5])})" if seen else ""
        return fail(
            f"no project in Label Studio has this backend (instance {s.instance}) connected{elsewhere}",
            "`python -m backend setup-project --backend-url <the backend as Label Studio reaches it>`, or pass "
            "--project ID",
        )
    return ok(f"{len(s.connections)} with this backend connected: {', '.join(map(str, sorted(s.connections)))}")


def check_project(s: Smoke, project: int) -> Result:
    from label_studio_sdk.core.api_error import ApiError

    assert s.ls is not None
    try:
        found = s.ls.ls.projects.get(id=project)
    except ApiError as exc:
        if exc.status_code in (403, 404):
            return fail(
                f"Label Studio has no project {project} this token sees", "the id is in the project's URL: /projects/ID"
            )
        raise
    return ok(f"{found.title!r}, {found.task_number or 0} tasks")


def check_connection(s: Smoke, project: int) -> Result:
    """One of the project's ML connections is this backend: the worker trains only then (not_connected)."""
    assert s.ls is not None
    if project in s.connections:
        return ok(f"{s.connections[project]['url']} is this backend (instance {s.instance})")
    connections = [as_dict(m) for m in s.ls.ls.ml.list(project=project)]
    for connection in connections:
        if s.instance_at(connection["url"]) == s.instance:
            s.connections[project] = connection
            return ok(f"{connection['url']} is this backend (instance {s.instance})")
    fix = "`python -m backend setup-project --backend-url <the backend as Label Studio reaches it>` connects it"
    if not connections:
        return fail(f"project {project} has no ML backend connected: no predictions, no retraining", fix)
    seen = "; ".join(f"{c['url']} is {s.instance_at(c['url'])}" for c in connections)
    return fail(
        f"none of its ML backends is this one (instance {s.instance}): {seen}; trainings end as not_connected",
        fix + "; run this check where the worker runs (it must reach the backend at Label Studio's URL)",
    )


def check_ls_view(s: Smoke, project: int) -> Result:
    """Label Studio's own view of the connection: reading it makes Label Studio call /health and /setup now."""
    assert s.ls is not None
    connection = as_dict(s.ls.ls.ml.get(id=s.connections[project]["id"]))
    state, message = connection.get("readable_state") or connection.get("state"), connection.get("error_message")
    if state in ("Connected", "Training", "Predicting"):
        return ok(f"Label Studio sees {connection['url']} as {state}")
    if message and "reserved network address" in message:
        return fail(f"Label Studio's SSRF protection refuses {connection['url']}: {message[:200]}", SSRF_FIX)
    if state == "Error":
        return fail(f"Label Studio's call to the backend failed: {(message or '?')[:300]}", "see the backend's log")
    return fail(
        f"Label Studio cannot reach {connection['url']} (state {state}) though it answers here: its SSRF protection "
        "refuses local and private addresses, or that URL does not lead to the backend from Label Studio",
        SSRF_FIX + "; else connect the backend at an address Label Studio reaches",
    )


def check_webhook(s: Smoke, project: int) -> Result:
    """Annotations reach the backend through a webhook to <backend>/webhook carrying the secret; Start Training
    through the ML connection's basic auth (setup-project makes both)."""
    assert s.ls is not None
    connection = s.connections[project]
    hook_url = connection["url"].rstrip("/") + "/webhook"
    hooks = [as_dict(h) for h in s.ls.ls.webhooks.list(project=str(project))]
    ours = [h for h in hooks if str(h.get("url", "")).rstrip("/") == hook_url and h.get("project") == project]
    setup = "run `python -m backend setup-project` for it again (it adds or fixes the webhook)"
    if not ours:
        return fail(f"no webhook to {hook_url}: annotations never reach the backend, it never retrains", setup)
    if not any(h.get("is_active", True) for h in ours):
        return fail(f"the webhook to {hook_url} is turned off", "turn it on: the project's Settings -> Webhooks")
    wanted = webhook_headers(s.settings.basic_auth, s.settings.secret)
    if not any((h.get("headers") or {}) == wanted for h in ours if h.get("is_active", True)):
        sent = {name for h in ours for name in h.get("headers") or {}}
        if not wanted:
            what = "headers the backend does not ask for"
        elif set(wanted) <= sent:
            what = f"a {' and '.join(wanted)} other than the backend's"
        else:
            what = f"no {' and no '.join(wanted)}"
        return fail(
            f"the webhook to {hook_url} carries {what}: the backend answers 403 to every annotation event", setup
        )
    if s.settings.secret and not s.settings.basic_auth and connection.get("auth_method") != "BASIC_AUTH":
        return fail(
            "the ML connection has no basic auth: Start Training is refused (403)",
            f"the project's Settings -> Model: basic auth, user {WEBHOOK_USER}, password WEBHOOK_SECRET",
        )
    secret = f" with {WEBHOOK_HEADER}" if s.settings.secret else ""
    return ok(f"{hook_url}{secret}")


def check_model_version(s: Smoke, project: int) -> Result:
    """Label Studio samples by uncertainty only among predictions of the project's model_version."""
    assert s.ls is not None
    answer = requests.get(
        f"{s.backend_url}/versions", params={"project": project}, auth=s.settings.basic_auth, timeout=TIMEOUT
    )
    answer.raise_for_status()
    versions = _json(answer)
    serving = s.serving[project] = versions["current"]
    ordered_by = s.ls.model_version(project)
    if ordered_by != serving:
        rollback = f"`python -m backend rollback --project {project} --to {serving}`"
        fix = (
            f"press Start Training, or {rollback}: both re-score the project and switch it"
            if serving in (versions.get("versions") or [])
            else "press Start Training: the worker trains a first version, re-scores the project and switches it"
        )
        return fail(
            f"Label Studio orders the queue by {ordered_by or '(no version)'!r} but the backend serves {serving!r}",
            f"{fix} (a re-scoring under way switches it when it ends)",
            blocking=False,
        )
    return ok(f"{serving!r}, the version the backend serves")


def check_predictions(s: Smoke, project: int) -> Result:
    assert s.ls is not None
    serving = s.serving[project]
    counts = s.ls.model_versions(project)
    if not counts.get(serving):
        others = ", ".join(f"{n} of {v}" for v, n in counts.items()) or "none at all"
        return fail(
            f"no predictions of {serving!r} ({others}): Label Studio samples at random",
            "press Start Training: the worker writes its window of the most uncertain tasks (or Data Manager -> "
            "Retrieve predictions)",
        )
    return ok(f"{counts[serving]} of {serving!r}")


def check_training(s: Smoke, project: int) -> Result:
    """What Start Training does, then the job waited for: the queue and a worker, end to end."""
    from rq.job import Job, JobStatus

    try:
        answer = request_training(s.backend_url, project, s.settings.basic_auth, s.settings.secret)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 503:
            return fail("/webhook answered 503: the backend cannot reach Redis at its REDIS_URL", "see its log")
        return fail(f"/webhook answered {status}: {exc}", "see the backend's log")
    job_id = answer.get("job")
    if not job_id:
        return ok(f"{answer.get('status')}: a run is under way; the backend queued one more after it")
    started, status = time.time(), None
    while time.time() - started < TRAIN_WAIT:
        job = Job.fetch(job_id, connection=s.redis)
        status = job.get_status()
        if status == JobStatus.FINISHED:
            result: Any = job.return_value() or {}
            if result.get("status") == "not_connected":
                return fail(f"job {job_id}: not_connected: {result.get('reason')}", "connect this backend (above)")
            outcome = ", ".join(f"{k} {v}" for k, v in result.items() if k in ("status", "version", "labels"))
            return ok(f"job {job_id} finished in {time.time() - started:.0f} s: {outcome}")
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            latest = job.latest_result()
            error = (latest.exc_string or "").strip().splitlines()[-1:] if latest else []
            return fail(f"job {job_id} {status}: {' '.join(error) or '?'}", "the worker's log has the traceback")
        time.sleep(1)
    if status == JobStatus.STARTED:
        return ok(f"job {job_id}: a worker runs it, still training after {TRAIN_WAIT} s (a transformer takes minutes)")
    return fail(f"job {job_id} still {status} after {TRAIN_WAIT} s: no worker took it", "start a worker (above)")


# --- the run -------------------------------------------------------------------------------------------------


def settings_with_stack(settings: Settings) -> tuple[Settings, str]:
    """The settings, over those `make run` wrote to its STACK_DIR (it chooses Redis's port at start)."""
    # Where the launcher looks: the environment, then .env.
    stack_dir = os.environ.get("STACK_DIR") or dotenv_values(ROOT / ".env").get("STACK_DIR")
    written = Path(stack_dir or ROOT / ".stack") / BACKEND_ENV
    if not written.is_file():
        return settings, "the environment and .env"
    return Settings(_env_file=(".env", written)), f"the environment, .env and {written} (make run's)"  # type: ignore[call-arg]


def line(name: str, result: Result) -> str:
    text = f"{result.status:<4} {name}: {result.detail}"
    return text + (f"\n     fix: {result.fix}" if result.status == FAIL and result.fix else "")


def smoke(
    settings: Settings,
    backend_url: str,
    *,
    project: int | None = None,
    train: bool = False,
    out: Callable[[str], None] = print,
) -> int:
    """Run the checks in order, one printed line each; 0 when every check passed, else 1."""
    s = Smoke(settings, backend_url.rstrip("/"))
    results: dict[str, Result] = {}

    def step(name: str, check: Callable[..., Result], *args: Any, needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if results[n].status == SKIP or (results[n].status == FAIL and results[n].blocking)]
        if missing:
            result = Result(SKIP, f"needs {', '.join(missing)}")
        else:
            try:
                result = check(s, *args)
            except Exception as exc:  # a surprise in one check (an SDK error, an odd answer): the others still run
                result = fail(f"{type(exc).__name__}: {str(exc)[:300]}")
        results[name] = result
        out(line(name, result))

    step("backend /health", check_backend)
    step("backend /versions", check_backend_auth, needs=("backend /health",))
    step("backend /webhook", check_webhook_secret, needs=("backend /health",))
    step("Redis", check_redis)
    step("workers", check_workers, needs=("Redis",))
    step("Label Studio", check_label_studio)
    step("Label Studio token", check_token, needs=("Label Studio",))
    if project is None:
        step("projects", find_projects, needs=("backend /health", "Label Studio token"))
    for pid in [project] if project is not None else sorted(s.connections):
        name = f"project {pid}"
        step(name, check_project, pid, needs=("backend /health", "Label Studio token"))
        step(f"{name} ML backend", check_connection, pid, needs=(name,))
        step(f"{name} Label Studio's view", check_ls_view, pid, needs=(f"{name} ML backend",))
        step(f"{name} webhook", check_webhook, pid, needs=(f"{name} ML backend", "backend /webhook"))
        step(f"{name} model_version", check_model_version, pid, needs=(f"{name} ML backend", "backend /versions"))
        step(f"{name} predictions", check_predictions, pid, needs=(f"{name} model_version",))
        if train:
            step(f"{name} training", check_training, pid, needs=("workers", "backend /webhook", f"{name} ML backend"))

    failed = [name for name, result in results.items() if result.status == FAIL]
    skipped = sum(result.status == SKIP for result in results.values())
    passed = len(results) - len(failed) - skipped
    out("")
    out(
        f"{passed} of {len(results)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + (f"; skipped: {skipped}" if skipped else "")
    )
    return 0 if passed == len(results) else 1


def main(settings: Settings, backend_url: str | None, project: int | None = None, train: bool = False) -> int:
    """`python -m backend smoke`: the checks, with the settings the backend runs with."""
    settings, source = settings_with_stack(settings)
    backend_url = backend_url or f"http://localhost:{settings.port}"
    print(
        f"backend {backend_url}, Redis {redact(settings.redis_url)} (queue {settings.rq_queue!r}), Label Studio "
        f"{settings.label_studio_url}; settings from {source}\n"
    )
    return smoke(settings, backend_url, project=project, train=train)
