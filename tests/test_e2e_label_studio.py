"""End to end against a real Label Studio 1.23 (started here) and the backend under gunicorn."""

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from backend.labels import parse_label_config
from backend.model import Classifier
from backend.predictor import class_probabilities
from backend.registry import Registry
from tests.conftest import LABEL_CONFIG, ROOT, read_demo

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {seconds} s:\n{log.read_text()[-3000:]}")


def _start(cmd, env, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    binary = os.environ.get("LABEL_STUDIO_BIN") or str(ROOT / ".venv-ls" / "bin" / "label-studio")
    if not Path(binary).exists():
        reason = f"Label Studio not installed at {binary} (run `make install`)"
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("label-studio")
    port, token = _free_port(), secrets.token_hex(20)
    env = {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    }
    cmd = [binary, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
           "--username", "admin@example.com", "--password", "e2e-pass-123", "--user-token", token]
    proc = _start(cmd, env, data / "label-studio.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/health", proc, 300, data / "label-studio.log")
        yield url, token
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def backend_url(trained_model_dir, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    env = {"MODEL_DIR": str(trained_model_dir), "HF_HUB_OFFLINE": "1", "WORKERS": "2", "THREADS": "2"}
    proc = _start([sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc, 180, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def test_predictions_and_uncertainty_sampling_in_label_studio(label_studio, backend_url, trained_model_dir):
    from label_studio_sdk import LabelStudio

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    texts = [r["text"] for r in read_demo("tweets_pool.csv")[:30]]

    project = ls.projects.create(title="e2e xenofobia", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": t} for t in texts])
    ls.ml.create(project=project.id, url=backend_url, title="tweets")
    ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                      selected_items={"all": True, "excluded": []})

    tasks = list(ls.tasks.list(project=project.id, page_size=100))
    assert len(tasks) == len(texts)

    version = Registry(trained_model_dir).current("default")
    classifier = Classifier.load(version.path, version=version.name)
    config = parse_label_config(LABEL_CONFIG)
    scores = {}
    for task in tasks:
        preds = [p if isinstance(p, dict) else p.model_dump() for p in task.predictions]
        assert len(preds) == 1, f"task {task.id} has {len(preds)} predictions"
        pred = preds[0]
        assert pred["model_version"] == version.name
        probs = class_probabilities(classifier, config, [task.data["text"]])[0]
        assert pred["score"] == pytest.approx(abs(probs[0] - probs[1]), abs=1e-4)
        assert pred["result"][0]["value"]["choices"] == [config.classes[int(np.argmax(probs))]]
        scores[task.id] = pred["score"]

    # Both gunicorn workers' counters add up in /metrics.
    served = requests.get(f"{backend_url}/metrics", timeout=10).text
    line = next(l for l in served.splitlines() if l.startswith(f'ml_backend_predictions_total{{model_version="{version.name}"}}'))
    assert float(line.split()[-1]) >= len(texts)

    ls.projects.update(id=project.id, sampling="Uncertainty sampling", model_version=version.name)
    answer = requests.get(f"{url}/api/projects/{project.id}/next", headers={"Authorization": f"Token {token}"},
                          timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == min(scores, key=scores.get)
