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

from backend.registry import Registry
from backend.stack.processes import free_port
from tests.helpers import ROOT, child_pids, v

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
    made_on_the_first_run = ("LABEL_STUDIO_API_KEY", "REDIS_PASSWORD", "RQ_DASHBOARD_PASSWORD", "BASIC_AUTH_PASS")
    for name in ("REDIS_URL", "BASIC_AUTH_USER", *made_on_the_first_run):
        env.pop(name, None)
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
            first = v(Registry(tmp_path / "stack" / "models"), "1", 1)
            while (projects := _project(url, token)) and projects[0]["model_version"] != first:
                assert time.time() < deadline, (tmp_path / "stack" / "worker.log").read_text()[-3000:]
                time.sleep(2)
            assert [(p["title"], p["task_number"]) for p in projects] == [("Demo: tweets xenofobia", 403)]
            assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok
            # The report's address is printed beside Label Studio's with the backend's login (made on the first
            # run), and it answers only with that login: it shows the project's tweets and labels.
            report = f"http://127.0.0.1:{port}/report?project={projects[0]['id']}"
            backend_login = ("admin", (tmp_path / "stack" / "backend-password").read_text().strip())
            assert f"report: {report}  login admin / {backend_login[1]}" in log.read_text()
            assert requests.get(report, timeout=30).status_code == 401
            assert "learning report" in requests.get(report, auth=backend_login, timeout=120).text
            # rq-dashboard: behind the login printed beside its address (password made on the first run) ...
            dashboard = f"http://127.0.0.1:{dashboard_port}/0/data"
            login = ("admin", (tmp_path / "stack" / "rq-dashboard-password").read_text().strip())
            assert f"rq-dashboard: http://127.0.0.1:{dashboard_port}  login admin / {login[1]}" in log.read_text()
            assert requests.get(f"{dashboard}/queues.json", timeout=10).status_code == 401
            # ... it sees the queue and the one worker (registered once it has imported torch).
            deadline = time.time() + 120
            while not (workers := requests.get(f"{dashboard}/workers.json", timeout=10, auth=login).json()["workers"]):
                assert time.time() < deadline, (tmp_path / "stack" / "worker.log").read_text()[-3000:]
                time.sleep(1)
            assert len(workers) == 1
            queues = requests.get(f"{dashboard}/queues.json", timeout=10, auth=login).json()["queues"]
            assert "ml-backend" in [q["name"] for q in queues]
            # Redis requires the password made on the first run; it shows in no log, only masked in the banner.
            redis_password = (tmp_path / "stack" / "redis-password").read_text().strip()
            assert "redis: redis://:***@127.0.0.1:" in log.read_text()
            logs = [log, *(tmp_path / "stack").glob("**/*.log")]
            assert len(logs) >= 6 and not [p for p in logs if redis_password in p.read_text(errors="replace")]
            # No secret on a command line, where every user of the machine reads it (`ps`).
            children = child_pids(proc.pid)
            secrets = [redis_password, login[1], backend_login[1], token, "launcher-pass-1"]
            assert not [c for c in children if any(x in Path(f"/proc/{c}/cmdline").read_text() for x in secrets)]
        finally:
            children = child_pids(proc.pid)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        # Ctrl-C stopped every process it started.
        for child in children:
            assert not os.path.exists(f"/proc/{child}") or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=2)
