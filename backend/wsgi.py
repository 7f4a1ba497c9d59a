"""`python -m backend serve`: the Flask app under gunicorn, WORKERS processes x THREADS threads.

Each worker builds its own app (and loads its model) after the fork: no model in the master, no torch
thread pools shared across a fork.
"""

from __future__ import annotations

import os
import tempfile

from gunicorn.app.base import BaseApplication

from .settings import Settings


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self):
        s = self.settings
        self.cfg.set("bind", f"{s.host}:{s.port}")
        self.cfg.set("workers", s.workers)
        self.cfg.set("threads", s.threads)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("timeout", 300)  # 5,000 tasks in one /predict, and a model load at boot
        self.cfg.set("loglevel", s.log_level.lower())
        self.cfg.set("accesslog", "-")
        self.cfg.set("child_exit", _child_exit)

    def load(self):
        from .api import create_app

        return create_app(self.settings)


def _child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(settings: Settings) -> None:
    # Must be set before prometheus_client is imported anywhere, so every worker writes shared files.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ml-backend-metrics-"))
    _Gunicorn(settings).run()
