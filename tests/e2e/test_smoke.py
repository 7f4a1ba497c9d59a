"""`python -m backend smoke` against the stack `make run` starts: a real Label Studio and redis-server (the session
stack), and a backend under gunicorn with its RQ worker. A healthy project passes every check (a Start Training
round trip included); each broken setting is said in plain words, and no secret is printed.

The backend and the worker are this module's own (a copy of the trained MODEL_DIR as a new instance, a queue of
their own), started as the stack starts them: whatever the loop's tests leave in the stack's backend (a scope
they degraded on purpose, jobs still queued) is not this module's to judge.
"""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from backend.stack.launcher import LocalStack
from tests.helpers import LABEL_CONFIG, ROOT, read_demo

pytestmark = pytest.mark.e2e
QUEUE = "smoke-e2e"


@dataclass
class Backend:
    url: str
    env: dict  # its settings, and its worker's: the stack's, with its own MODEL_DIR and RQ_QUEUE
    stack: LocalStack


@pytest.fixture(scope="module")
def ml_backend(stack, trained_model_dir, tmp_path_factory):
    from rq import Queue, Worker

    from backend.registry import INSTANCE
    from backend.retraining.policy import connect
    from backend.settings import Settings
    from backend.stack.processes import free_port, start_backend, start_worker, stop

    folder = tmp_path_factory.mktemp("smoke")
    shutil.copytree(trained_model_dir, folder / "models")
    (folder / "models" / INSTANCE).unlink(missing_ok=True)  # a new instance (SECURITY.md: a copied MODEL_DIR)
    env = {**stack.env, "MODEL_DIR": str(folder / "models"), "RQ_QUEUE": QUEUE}
    proc, url = start_backend(env, free_port(), folder / "backend.log")
    worker = start_worker(env, folder / "worker.log")
    try:
        # The worker registers once it has imported the jobs (seconds).
        queue = Queue(QUEUE, connection=connect(Settings(_env_file=None, redis_url=stack.redis_url)))
        deadline = time.time() + 120
        while not Worker.all(queue=queue):
            assert worker.poll() is None and time.time() < deadline, (folder / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        yield Backend(url, env, stack)
    finally:
        stop(worker)
        stop(proc)


@pytest.fixture(scope="module")
def ls(stack):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=stack.ls_url, api_key=stack.token)


@pytest.fixture(scope="module")
def project(ml_backend, ls) -> int:
    """A project set up as setup-project does: tweets, the backend connected, predictions, model_version."""
    from backend.labelstudio.project_setup import setup_project

    pool = [{"id": f"s{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[150:170])]
    report = setup_project(
        ls,
        title="smoke e2e",
        label_config=LABEL_CONFIG,
        rows=pool,
        backend_url=ml_backend.url,
        backend_auth=ml_backend.stack.backend_auth,
        webhook_secret=ml_backend.stack.webhook_secret,
    )
    assert report.model_version
    return report.project


def smoke(ml_backend: Backend, *args: str, only_stack_dir: bool = False, **env: str) -> tuple[int, str]:
    """The command as ops run it, with the backend's settings (`env` changes some); (exit status, output).
    `only_stack_dir`: none in the environment, as after `make run`: they come from STACK_DIR/backend.env."""
    stack = ml_backend.stack
    base = {k: v for k, v in os.environ.items() if not (only_stack_dir and k in ml_backend.env)}
    answer = subprocess.run(
        [sys.executable, "-m", "backend", "smoke", "--backend-url", ml_backend.url, *args],
        env={**base, **({} if only_stack_dir else ml_backend.env), "STACK_DIR": str(stack.folder), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = answer.stdout
    for secret in (stack.token, stack.webhook_secret, stack.redis_password, stack.backend_password):
        assert secret not in out + answer.stderr
    return answer.returncode, out


def checks(out: str) -> list[str]:
    """The check lines, without the header, the fixes and the summary."""
    return [line for line in out.splitlines() if line[:5] in ("ok   ", "FAIL ", "skip ")]


def test_a_healthy_project_passes_every_check_with_a_training_round_trip(ml_backend, project):
    code, out = smoke(ml_backend, "--project", str(project), "--train")
    assert code == 0, out
    lines = checks(out)
    assert all(line.startswith("ok   ") for line in lines), out
    names = [line[5:].split(":")[0] for line in lines]
    assert names == [
        "backend /health",
        "backend /versions",
        "backend /webhook",
        "Redis",
        "workers",
        "Label Studio",
        "Label Studio token",
        *(
            f"project {project}{part}"
            for part in ("", " ML backend", " Label Studio's view", " webhook", " model_version", " predictions")
        ),
        f"project {project} training",
    ]
    assert f"{len(lines)} of {len(lines)} checks passed" in out
    assert "password accepted" in out and "Label Studio 1.23" in out and "with X-Webhook-Secret" in out
    assert "redis://:***@" in out
    # No labels yet: the job (through Redis and a worker) finds too few to train on, and says so.
    assert "finished in" in out and "status cold_start" in out

    # Without --project: every project with this backend connected, this one among them; and with the settings
    # the launcher wrote for it (`make smoke` after `make run`: Redis's port is chosen at start).
    _, out = smoke(ml_backend, only_stack_dir=True)
    assert f"{ml_backend.stack.folder / 'backend.env'} (make run's)" in out
    found = next(line for line in checks(out) if line.startswith("ok   projects: "))
    assert str(project) in found.split(": ")[-1].split(", ")
    assert f"ok   project {project} model_version: " in out


def test_a_wrong_token_is_named(ml_backend, project):
    code, out = smoke(ml_backend, "--project", str(project), LABEL_STUDIO_API_KEY="0" * 40)
    assert code == 1
    assert (
        "FAIL Label Studio token: Label Studio refused LABEL_STUDIO_API_KEY (401: Invalid token.): wrong token" in out
    )
    assert f"skip project {project}: needs Label Studio token" in out


def test_legacy_tokens_turned_off_are_named(ml_backend, ls, project, personal_access_token):
    """Label Studio 1.23 can turn legacy tokens off: the check says which flag to set, and a personal access token
    passes."""
    from label_studio_sdk import LabelStudio

    pat = personal_access_token
    admin = LabelStudio(base_url=ml_backend.stack.ls_url, api_key=pat)
    ttl = admin.jwt_settings.get().api_token_ttl_days
    admin.jwt_settings.update(api_token_ttl_days=ttl, legacy_api_tokens_enabled=False)
    try:
        code, out = smoke(ml_backend, "--project", str(project))
        assert code == 1
        assert "FAIL Label Studio token: Label Studio refuses legacy tokens" in out
        assert "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true" in out and "personal access token" in out
        code, out = smoke(ml_backend, "--project", str(project), LABEL_STUDIO_API_KEY=pat)
        assert code == 0, out
    finally:
        admin.jwt_settings.update(api_token_ttl_days=ttl, legacy_api_tokens_enabled=True)


def test_a_wrong_redis_password_is_named_and_never_printed(ml_backend, project):
    stack = ml_backend.stack
    wrong = stack.redis_url.replace(stack.redis_password, "wrong-redis-password")
    assert wrong != stack.redis_url
    code, out = smoke(ml_backend, "--project", str(project), REDIS_URL=wrong)
    assert code == 1
    assert "FAIL Redis: Redis at redis://:***@127.0.0.1:" in out and "refused REDIS_URL's password" in out
    assert "skip workers: needs Redis" in out
    assert "wrong-redis-password" not in out


def test_no_worker_on_the_queue_is_named(ml_backend, project):
    code, out = smoke(ml_backend, "--project", str(project), RQ_QUEUE="smoke-nobody-listens")
    assert code == 1
    assert (
        f"FAIL workers: no worker on queue 'smoke-nobody-listens' (workers listen on ml-backend, {QUEUE}: "
        "RQ_QUEUE differs): trainings queue up but never run" in out
    )
    assert "start `python -m backend worker`" in out


def test_a_model_version_mismatch_is_named(ml_backend, ls, project):
    """Label Studio sets model_version to the connection's title on connect: it then samples at random."""
    version = ls.projects.get(id=project).model_version
    (connection,) = ls.ml.list(project=project)
    ls.projects.update(id=project, model_version=connection.title)
    try:
        code, out = smoke(ml_backend, "--project", str(project))
    finally:
        ls.projects.update(id=project, model_version=version)
    assert code == 1
    assert (
        f"FAIL project {project} model_version: Label Studio orders the queue by {connection.title!r} but the "
        f"backend serves {version!r}" in out
    )
    assert "fix: press Start Training" in out
    # The other checks still ran, and passed.
    assert [line for line in checks(out) if not line.startswith("ok   ")] == [
        f"FAIL project {project} model_version: "
        f"Label Studio orders the queue by {connection.title!r} but the backend serves {version!r}"
    ]
