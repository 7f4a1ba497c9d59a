"""`python -m backend smoke` without Label Studio: services that are down, a real redis-server (its password, its
workers) and the backend's app served over HTTP. tests/e2e/test_smoke.py runs the command against the real stack.
"""

import threading

import pytest
from pydantic import SecretStr
from rq import Queue, Worker
from werkzeug.serving import make_server

from backend.api import create_app
from backend.settings import Settings
from backend.smoke import (
    FAIL,
    OK,
    Smoke,
    check_backend,
    check_backend_auth,
    check_redis,
    check_webhook_secret,
    check_workers,
    smoke,
)
from backend.stack.processes import free_port


def _settings(**values) -> Settings:
    return Settings(_env_file=None, basic_auth_user="", basic_auth_pass="", webhook_secret="", **values)


def test_services_that_are_down_are_named_and_what_needs_them_skipped(tmp_path):
    closed = free_port()
    settings = _settings(
        model_dir=tmp_path,
        redis_url=f"redis://:hunter2-redis@127.0.0.1:{closed}/0",
        label_studio_url=f"http://127.0.0.1:{closed}",
        label_studio_api_key="hunter2-token",
    )
    lines: list[str] = []
    assert smoke(settings, f"http://127.0.0.1:{closed}", out=lines.append) == 1
    text = "\n".join(lines)
    assert f"FAIL backend /health: no answer at http://127.0.0.1:{closed}" in text
    assert "skip backend /versions: needs backend /health" in text
    assert f"FAIL Redis: no answer from Redis at redis://:***@127.0.0.1:{closed}/0" in text
    assert "skip workers: needs Redis" in text
    assert f"FAIL Label Studio: no answer at http://127.0.0.1:{closed}" in text
    assert "skip projects: needs backend /health, Label Studio token" in text
    assert lines[-1] == "0 of 8 checks passed; failed: backend /health, Redis, Label Studio; skipped: 5"
    assert "hunter2" not in text


def test_redis_password_and_workers(redis_server, tmp_path):
    wrong = _settings(model_dir=tmp_path, redis_url=redis_server.url.replace(redis_server.password, "hunter2-wrong"))
    result = check_redis(Smoke(wrong, "http://unused"))
    assert result.status == FAIL and "refused REDIS_URL's password" in result.detail
    assert "hunter2" not in result.detail + result.fix and redis_server.password not in result.detail + result.fix

    s = Smoke(_settings(model_dir=tmp_path, redis_url=redis_server.url, rq_queue="smoke-test"), "http://unused")
    result = check_redis(s)
    assert result.status == OK and result.detail.endswith("answers, password accepted")
    assert redis_server.password not in result.detail
    result = check_workers(s)
    assert result.status == FAIL
    assert result.detail.startswith("no worker on queue 'smoke-test': trainings queue up but never run")

    # Workers (registered as a starting worker registers itself) on another queue, then on this one.
    Worker(["elsewhere"], connection=s.redis, name="other").register_birth()
    assert "(workers listen on elsewhere: RQ_QUEUE differs)" in check_workers(s).detail
    Worker(["smoke-test"], connection=s.redis, name="ours").register_birth()
    Queue("smoke-test", connection=s.redis).enqueue_call("os.getcwd")
    result = check_workers(s)
    assert result.status == OK
    assert result.detail == "1 worker(s) on queue 'smoke-test'; 1 job(s) waiting, 0 running, 0 failed"


@pytest.fixture(scope="module")
def guarded_backend(trained_model_dir):
    """The backend's app with basic auth and a webhook secret, over HTTP on a free port."""
    settings = _settings(model_dir=trained_model_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    settings = settings.model_copy(
        update={
            "basic_auth_user": "ops",
            "basic_auth_pass": SecretStr("hunter2-pass"),
            "webhook_secret": SecretStr("hunter2-secret"),
        }
    )
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield settings, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_backends_basic_auth_and_webhook_secret(guarded_backend):
    settings, url = guarded_backend
    s = Smoke(settings, url)
    result = check_backend(s)
    assert result.status == OK and result.detail == f"UP (instance {s.instance})" and len(s.instance or "") == 6
    assert check_backend_auth(s).detail.startswith("answers (with basic auth)")
    assert check_webhook_secret(s).detail == "accepts events with WEBHOOK_SECRET"

    def problem(check, **changes) -> str:
        update = {k: SecretStr(v) if k != "basic_auth_user" else v for k, v in changes.items()}
        result = check(Smoke(settings.model_copy(update=update), url))
        assert result.status == FAIL and "hunter2" not in result.detail + result.fix
        return result.detail

    assert "refused BASIC_AUTH_USER/BASIC_AUTH_PASS (401): they differ" in problem(
        check_backend_auth, basic_auth_pass="x"
    )
    assert "asks for basic auth (401) and BASIC_AUTH_USER is not set here" in problem(
        check_backend_auth, basic_auth_user="", basic_auth_pass=""
    )
    assert problem(check_webhook_secret, webhook_secret="x").endswith("WEBHOOK_SECRET differs from the backend's")
    assert problem(check_webhook_secret, webhook_secret="", basic_auth_user="", basic_auth_pass="").endswith(
        "WEBHOOK_SECRET is not set here, and the backend has one"
    )
