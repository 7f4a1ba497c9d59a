"""`make run`'s launcher: the whole stack comes up with a demo project, Ctrl-C stops it all, a second run
reuses the data and duplicates nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from backend.stack.processes import free_port
from tests.helpers import ROOT, child_pids

pytestmark = pytest.mark.e2e


def _launch(stack_dir, ls_port, port, dashboard_port, log):
    env = {
        **os.environ,
        "STACK_DIR": str(stack_dir),
        "LABEL_STUDIO_PORT": str(ls_port),
        "PORT": str(port),
        "RQ_DASHBOARD_PORT": str(dashboard_port),
        "LABEL_STUDIO_PASSWORD": "launcher-pass-1",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("REDIS_URL", None)
    env.pop("LABEL_STUDIO_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "backend", "run"], env=env, cwd=ROOT, stdout=log.open("a"), stderr=subprocess.STDOUT
    )


def _wait_for(log, text, proc, seconds):
    deadline = time.time() + seconds
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-4000:]
        assert time.time() < deadline, log.read_text()[-4000:]
        time.sleep(1)


def _project(url, token):
    answer = requests.get(f"{url}/api/projects/", headers={"Authorization": f"Token {token}"}, timeout=30).json()
    return answer["results"] if isinstance(answer, dict) else answer


def test_make_run_brings_up_the_demo_and_stops_cleanly(label_studio_binary, tmp_path):
    ls_port, port, dashboard_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{ls_port}"
    for attempt in (1, 2):
        log = tmp_path / f"run-{attempt}.log"
        proc = _launch(tmp_path / "stack", ls_port, port, dashboard_port, log)
        try:
            _wait_for(log, "Ctrl-C stops everything.", proc, 400)
            token = (tmp_path / "stack" / "api-key").read_text().strip()
            # The demo project: every demo tweet once, the worker's first model serving it.
            deadline = time.time() + 400
            while (projects := _project(url, token)) and projects[0]["model_version"] != "project1-v1":
                assert time.time() < deadline, (tmp_path / "stack" / "worker.log").read_text()[-3000:]
                time.sleep(2)
            assert [(p["title"], p["task_number"]) for p in projects] == [("Demo: tweets xenofobia", 403)]
            assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok
            # The report's address is printed beside Label Studio's, and it answers.
            report = f"http://127.0.0.1:{port}/report?project={projects[0]['id']}"
            assert f"report: {report}" in log.read_text()
            assert "learning report" in requests.get(report, timeout=120).text
            # rq-dashboard sees the queue and the one worker (registered once it has imported torch).
            dashboard = f"http://127.0.0.1:{dashboard_port}/0/data"
            deadline = time.time() + 120
            while not (workers := requests.get(f"{dashboard}/workers.json", timeout=10).json()["workers"]):
                assert time.time() < deadline, (tmp_path / "stack" / "worker.log").read_text()[-3000:]
                time.sleep(1)
            assert len(workers) == 1
            queues = requests.get(f"{dashboard}/queues.json", timeout=10).json()["queues"]
            assert "ml-backend" in [q["name"] for q in queues]
        finally:
            children = child_pids(proc.pid)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        # Ctrl-C stopped every process it started.
        for child in children:
            assert not os.path.exists(f"/proc/{child}") or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=2)
