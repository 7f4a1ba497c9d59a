"""What several tests share: paths, the project's label config, the demo tweets, process helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from backend.labelstudio.label_config import default_label_config, parse_label_config
from backend.stack.demo import DEMO, read_demo

ROOT = Path(__file__).resolve().parents[1]
LABEL_CONFIG = default_label_config()
CONFIG = parse_label_config(LABEL_CONFIG)

__all__ = ["CONFIG", "DEMO", "LABEL_CONFIG", "ROOT", "child_pids", "kill_tree", "pool_texts", "read_demo", "serving"]


def pool_texts(n: int | None = None) -> list[str]:
    """The demo pool's tweets (about 200), or the first `n`."""
    return [r["text"] for r in read_demo("tweets_pool.csv")[:n]]


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants, as the OOM killer or a lost machine would: no cleanup runs."""
    doomed, todo = [], [pid]
    while todo:
        current = todo.pop()
        doomed.append(current)
        todo += child_pids(current)
    for victim in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


# Without the networking flags, Chromium keeps calling Google's services, which this closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def v(registry, scope: str, number: int) -> str:
    """A version's name in `registry` ("<instance id>-project4-v1"), for assertions."""
    return registry.name_for(scope, number)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """A WSGI app (the backend's, or a stand-in) served over HTTP on a free port of 127.0.0.1; yields its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
