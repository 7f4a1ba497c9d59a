"""Redis with a password, as both stacks run it: REDIS_URL = redis://:PASSWORD@host:port/0.

Against a real redis-server started with --requirepass (the `redis_server` fixture; the launcher's Redis is the
same class): the backend's connection, the retraining policy, the webhook and a real `python -m backend worker`
work with the password in the URL; without it or with a wrong one they fail saying so, and the password shows in
no answer, log or message.
"""

import logging
import os
import subprocess
import sys
from urllib.parse import quote

import pytest
from redis.exceptions import AuthenticationError
from rq.job import Job, JobStatus

from backend.api import create_app
from backend.errors import BackendError
from backend.retraining.policy import Decision, RetrainPolicy, check_credentials, connect
from backend.settings import Settings, redact
from backend.stack.processes import RedisServer, free_port
from tests.helpers import ROOT


def _url(server: RedisServer, password: str | None) -> str:
    """The server's URL with `password` (None: no password at all)."""
    auth = "" if password is None else f":{quote(password, safe='')}@"
    return f"redis://{auth}127.0.0.1:{server.port}/0"


def _settings(tmp_path, url: str, **extra) -> Settings:
    return Settings(
        _env_file=None,
        model_dir=tmp_path / "models",
        redis_url=url,
        rq_queue="auth-test",
        webhook_secret="",
        basic_auth_user="",
        basic_auth_pass="",
        **extra,
    )


def test_the_policy_queues_through_a_url_with_the_password(redis_server, tmp_path):
    assert redis_server.password and redis_server.password in redis_server.url
    settings = _settings(tmp_path, redis_server.url)
    check_credentials(settings)  # accepted: no exception
    policy = RetrainPolicy.from_settings(settings, connect(settings))
    decision, job_id = policy.on_event(3, "START_TRAINING")
    assert decision is Decision.QUEUED
    assert Job.fetch(job_id, connection=connect(settings)).kwargs["project"] == 3


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        (None, "requires a password and REDIS_URL has none"),
        ("wrong-password", r"refused REDIS_URL's password \(invalid username-password pair"),
    ],
)
def test_no_password_or_a_wrong_one_is_refused_clearly_without_showing_it(redis_server, tmp_path, password, expected):
    settings = _settings(tmp_path, _url(redis_server, password))
    with pytest.raises(AuthenticationError):
        connect(settings).ping()
    with pytest.raises(BackendError, match=expected) as refused:
        check_credentials(settings)
    assert f"127.0.0.1:{redis_server.port}" in str(refused.value)
    assert "wrong-password" not in str(refused.value) and redis_server.password not in str(refused.value)


def test_a_redis_that_is_down_is_not_a_wrong_password(tmp_path):
    """A Redis that is down does not stop the backend at start (/webhook answers 503 until it is back)."""
    check_credentials(_settings(tmp_path, f"redis://:pw@127.0.0.1:{free_port()}/0"))


def test_the_webhook_answers_503_without_the_password_and_logs_why(redis_server, tmp_path, caplog):
    wrong = "wrong-password-1234"
    client = create_app(_settings(tmp_path, _url(redis_server, wrong))).test_client()
    with caplog.at_level(logging.ERROR):
        answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
    assert answer.status_code == 503 and "refused the password in REDIS_URL" in answer.json["error"]
    assert "invalid username-password pair" in caplog.text  # the log says what is wrong
    for leak in (wrong, redis_server.password):
        assert leak not in answer.get_data(as_text=True) and leak not in caplog.text


def test_any_password_works_in_the_url_when_quoted_and_no_command_line_shows_it(tmp_path):
    """`make run` takes REDIS_PASSWORD from .env as it is: the URL quotes it, redis-server reads it from stdin."""
    password = 'p@ss:w/rd #1% "quoted" \\ ñandú'
    server = RedisServer(tmp_path, password=password).start()
    try:
        assert connect(_settings(tmp_path, server.url)).ping()
        with pytest.raises(AuthenticationError):
            connect(_settings(tmp_path, _url(server, password[:-1]))).ping()
        assert not any("ñandú" in str(arg) for arg in server.proc.args)  # what `ps` could show before the title changes
    finally:
        server.stop()


def _worker(tmp_path, url: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "RQ_QUEUE": "auth-test",
        "MODEL_DIR": str(tmp_path / "models"),
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",  # nothing there: the job fails, visibly
        "LABEL_STUDIO_API_KEY": "token",
        "LABEL_STUDIO_ATTEMPTS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "backend", "worker", "--burst"]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e  # a real `python -m backend worker` process (it imports torch): in `make test`, not `make check`
def test_a_real_worker_runs_jobs_with_the_password_and_refuses_a_wrong_one(redis_server, tmp_path):
    wrong = "wrong-password-5678"
    refused = _worker(tmp_path, _url(redis_server, wrong))
    assert refused.returncode == 1
    assert (
        "error: Redis at redis://:***@127.0.0.1" in refused.stderr and "refused REDIS_URL's password" in refused.stderr
    )
    assert wrong not in refused.stderr + refused.stdout

    settings = _settings(tmp_path, redis_server.url)
    _, job_id = RetrainPolicy.from_settings(settings, connect(settings)).on_event(3, "START_TRAINING")
    done = _worker(tmp_path, redis_server.url)
    assert done.returncode == 0, done.stderr[-3000:]
    # The worker took the job from the password-protected Redis and ran it (Label Studio is absent: it failed).
    job = Job.fetch(job_id, connection=connect(settings))
    assert job.get_status() == JobStatus.FAILED
    assert "unreachable" in job.latest_result().exc_string
    # RQ's and the backend's logs never show the URL's password.
    assert redis_server.password not in done.stderr + done.stdout


def test_the_server_refuses_to_start_with_a_wrong_password(redis_server, tmp_path):
    wrong = "wrong-password-9012"
    env = {**os.environ, "REDIS_URL": _url(redis_server, wrong), "MODEL_DIR": str(tmp_path / "models")}
    command = [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(free_port())]
    refused = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "refused REDIS_URL's password" in refused.stderr
    assert wrong not in refused.stderr + refused.stdout


def test_a_printed_settings_masks_the_password():
    settings = Settings(_env_file=None, redis_url="redis://:s3cr3t-pw@redis:6379/0")
    assert settings.redis_url == "redis://:s3cr3t-pw@redis:6379/0"  # the backend itself still connects with it
    for shown in (repr(settings), str(settings)):
        assert "s3cr3t-pw" not in shown and "redis://:***@redis:6379/0" in shown


def test_redact():
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("rediss://user:p@ss:w@h:6380/1?ssl_cert_reqs=none") == "rediss://user:***@h:6380/1?ssl_cert_reqs=none"
    assert redact("redis://pw@h/0") == "redis://***@h/0"  # a user name, but maybe meant as a password
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"
