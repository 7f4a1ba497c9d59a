"""The active-learning loop end to end, on the stack `make run` starts: a real Label Studio, a real redis-server,
real RQ workers and the backend under gunicorn. Annotations made through Label Studio's API reach /webhook as
Label Studio sends them.
"""

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from rq.job import Job

from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.project_setup import connect_backend, webhook_headers
from backend.models.loader import load_version
from backend.predictions import class_probabilities
from backend.registry import Registry
from backend.retraining.policy import connect
from backend.settings import Settings
from backend.stack.launcher import LocalStack
from backend.stack.processes import stop
from tests.helpers import CONFIG, LABEL_CONFIG, kill_tree, read_demo

pytestmark = pytest.mark.e2e


@dataclass
class Loop:
    """The stack `make run` starts (the `stack` fixture), seen from the loop's side."""

    local: LocalStack

    @property
    def ls(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.local.ls_url, api_key=self.local.token)

    @property
    def worker(self):
        return self.local.workers[-1]

    def __getattr__(self, name):
        return getattr(self.local, name)  # ls_url, backend_url, token, redis_url, env, start_worker, ...

    @property
    def model_dir(self) -> Path:
        return self.local.folder / "models"

    @property
    def worker_log(self) -> str:
        return (self.local.folder / "worker.log").read_text()[-4000:]

    def webhook(self, action: str, project: int) -> dict:
        answer = requests.post(
            f"{self.backend_url}/webhook",
            json={"action": action, "project": {"id": project}},
            headers=webhook_headers(None, self.webhook_secret),
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def project_version(self, project: int) -> str | None:
        return self.ls.projects.get(id=project).model_version

    def wait_version(self, project: int, version: str, seconds: float = 400) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.project_version(project) == version:
                return
            assert self.worker.poll() is None, self.worker_log
            time.sleep(1)
        raise TimeoutError(f"project {project} never switched to {version}:\n{self.worker_log}")


@pytest.fixture(scope="module")
def loop(stack):
    return Loop(stack)


def _as_dict(item):
    return item if isinstance(item, dict) else item.model_dump()


@pytest.fixture(scope="module")
def project(loop):
    labeled = read_demo("tweets_labeled.csv")
    to_label = [r for r in labeled if r["label"] == "xenófobo"][:4] + [r for r in labeled if r["label"] == "ok"][:8]
    pool = [r["text"] for r in read_demo("tweets_pool.csv")[:36]]
    ls = loop.ls
    created = ls.projects.create(title="e2e loop", label_config=LABEL_CONFIG)
    answer = ls.projects.import_tasks(
        id=created.id,
        request=[{"text": r["text"]} for r in to_label] + [{"text": t} for t in pool],
        return_task_ids=True,
    )
    ids = list(answer.task_ids)
    # Connecting the backend makes Label Studio send every event to <backend>/webhook, with the secret header.
    connect_backend(ls, created.id, loop.backend_url, webhook_secret=loop.webhook_secret)
    ls.projects.update(id=created.id, sampling="Uncertainty sampling")
    return created.id, list(zip(ids[:12], [r["label"] for r in to_label], strict=True)), ids[12:]


def _wait_job(loop, job_id: str, seconds: float = 120) -> Job:
    redis = connect(Settings(redis_url=loop.redis_url))
    deadline = time.time() + seconds
    while time.time() < deadline:
        job = Job.fetch(job_id, connection=redis)
        if job.is_finished or job.is_failed:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job.get_status()}")


def test_annotations_retrain_promote_and_requeue(loop, project):
    pid, to_label, unlabeled = project
    # Cold start: two labels of one class are not enough to train; nothing is promoted.
    for task_id, label in to_label[:2]:
        loop.ls.annotations.create(id=task_id, result=[CONFIG.region(label)])
    job = _wait_job(loop, loop.webhook("START_TRAINING", pid)["job"])
    assert job.return_value()["status"] == "cold_start", job.latest_result().exc_string
    assert job.return_value()["label_counts"] == {"xenófobo": 2}
    assert Registry(loop.model_dir).current(str(pid)) is None

    # RETRAIN_EVERY (10 here) more annotations, each a webhook from Label Studio, start a fast run: the linear
    # kind, trained and serving every unlabeled task within seconds (the loop benchmark has the figures).
    for task_id, label in to_label[2:]:
        loop.ls.annotations.create(id=task_id, result=[CONFIG.region(label)])
    last_annotation = time.time()
    version = f"project{pid}-v1"
    loop.wait_version(pid, version)
    print(f"annotation -> linear version serving every task in Label Studio: {time.time() - last_annotation:.1f} s")

    # The worker trained on the labels it read from Label Studio and promoted the version. The 10th annotation
    # event (the 2 of the cold start count too) started the run, which reads what exists by then: 10 to 12.
    current = Registry(loop.model_dir).current(str(pid))
    used = current.metadata["labels_used"]
    assert current.name == version and 10 <= used <= 12
    assert current.metadata["label_counts"] == dict(Counter(label for _, label in to_label[:used]))
    assert (
        current.metadata["kind"] == "linear" and "cross-validation" in current.metadata["candidates"][0]["evaluated_on"]
    )
    # Every gunicorn worker reports it, without restart.
    for _ in range(4):
        setup = requests.post(
            f"{loop.backend_url}/setup", json={"project": f"{pid}.1700000000", "schema": LABEL_CONFIG}, timeout=5
        )
        assert setup.json()["model_version"] == version

    # Every unlabeled task carries one prediction of the new version, scored by its margin.
    classifier = load_version(current, Settings(), dtype="float32")
    config = parse_label_config(LABEL_CONFIG)
    scores = {}
    for task in loop.ls.tasks.list(project=pid, fields="all", page_size=100):
        if task.id not in unlabeled:
            continue
        predictions = [_as_dict(p) for p in task.predictions]
        assert [p["model_version"] for p in predictions] == [version], f"task {task.id}: {predictions}"
        probs = class_probabilities(classifier, config, [task.data["text"]])[0]
        assert predictions[0]["score"] == pytest.approx(abs(probs[0] - probs[1]), abs=1e-4)
        assert predictions[0]["result"][0]["value"]["choices"] == [config.classes[int(np.argmax(probs))]]
        scores[task.id] = predictions[0]["score"]
    assert sorted(scores) == sorted(unlabeled)

    # Uncertainty sampling now serves the task the new model is least sure of.
    answer = requests.get(
        f"{loop.ls_url}/api/projects/{pid}/next", headers={"Authorization": f"Token {loop.token}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == min(scores, key=scores.get)


def test_a_full_run_weighs_the_transformer_against_the_linear_kind(loop, project):
    """Start Training runs the full tier: both kinds on the same held-out labels, the better one serves."""
    pid, _, _ = project
    before = Registry(loop.model_dir).current(str(pid)).name
    # Enough labels for a held-out part: the demo's labeled tweets, imported with their annotations.
    rows = read_demo("tweets_labeled.csv")[20:140]
    loop.ls.projects.import_tasks(
        id=pid,
        request=[{"data": {"text": r["text"]}, "annotations": [{"result": [CONFIG.region(r["label"])]}]} for r in rows],
    )
    job = _wait_job(loop, loop.webhook("START_TRAINING", pid)["job"], seconds=400)
    result = job.return_value()
    assert job.is_finished and result["tier"] == "full", job.latest_result().exc_string
    scores = {c["kind"]: c["score"] for c in result["candidates"] if c.get("score") is not None}
    assert set(scores) >= {"linear", "transformer"}, result
    assert all("held-out" in c["evaluated_on"] for c in result["candidates"] if c["kind"] in scores)
    best = max(scores, key=scores.get)
    # A full run trains every kind, so it always promotes the best of them (a fast run may keep a transformer).
    promoted = Registry(loop.model_dir).current(str(pid))
    assert result["status"] == "promoted" and result["decision"].startswith(f"promoted {best}")
    assert promoted.metadata["kind"] == best and promoted.metadata["parent"] == before
    loop.wait_version(pid, promoted.name)
    versions = requests.get(f"{loop.backend_url}/versions", params={"project": pid}, timeout=5).json()
    assert versions["details"][-1]["decision"] == Registry(loop.model_dir).versions(str(pid))[-1].metadata["decision"]


def test_worker_killed_mid_training_keeps_the_previous_version(loop, project):
    pid, _, unlabeled = project
    before = Registry(loop.model_dir).current(str(pid)).name
    # One new label: a run on the serving version's own labels would have nothing to learn and end at once.
    loop.ls.annotations.create(id=unlabeled[-1], result=[CONFIG.region("ok")])
    # A worker whose training (the full run's transformer) lasts long enough to be killed in the middle of it.
    stop(loop.worker)
    loop.start_worker(TRAIN_MIN_STEPS=100000)
    job_id = loop.webhook("START_TRAINING", pid)["job"]
    redis = connect(Settings(redis_url=loop.redis_url))
    deadline = time.time() + 180
    while (Job.fetch(job_id, connection=redis).meta.get("step") or 0) < 2:
        assert time.time() < deadline, loop.worker_log
        time.sleep(0.5)
    kill_tree(loop.worker.pid)  # the worker and its work horse (RQ gives the horse a session of its own)
    loop.worker.wait()

    registry = Registry(loop.model_dir)
    versions_before = [v.name for v in registry.versions(str(pid))]
    assert registry.current(str(pid)).name == before and versions_before[-1] == before
    assert loop.project_version(pid) == before
    setup = requests.post(f"{loop.backend_url}/setup", json={"project": str(pid), "schema": LABEL_CONFIG}, timeout=5)
    assert setup.json()["model_version"] == before

    # Once the dead run's lease is over, the next request redoes the work on a healthy worker.
    time.sleep(float(loop.env["TRAINING_LEASE_SECONDS"]) + 1)
    loop.start_worker()
    answer = loop.webhook("START_TRAINING", pid)
    assert answer["status"] == "queued"
    job = _wait_job(loop, answer["job"], seconds=400)
    assert job.return_value()["status"] == "promoted", job.latest_result().exc_string
    after = job.return_value()["version"]
    loop.wait_version(pid, after)
    promoted = Registry(loop.model_dir).current(str(pid))
    assert promoted.name == after and promoted.metadata["parent"] == before
    # Label Studio keeps the predictions of the serving version only (deleted right after the switch).
    deadline = time.time() + 30
    while True:
        versions = requests.get(
            f"{loop.ls_url}/api/projects/{pid}/model-versions/",
            headers={"Authorization": f"Token {loop.token}"},
            timeout=30,
        ).json()
        if set(versions) == {after} or time.time() > deadline:
            break
        time.sleep(0.5)
    assert versions == {after: len(unlabeled) - 1}, versions  # one was labeled above


def _all_jobs(loop) -> set[str]:
    from rq import Queue
    from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    redis = connect(Settings(redis_url=loop.redis_url))
    queue = Queue(loop.env.get("RQ_QUEUE", "ml-backend"), connection=redis)
    registries = (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry)
    return set(queue.job_ids).union(*(r(queue=queue).get_job_ids() for r in registries))


def test_only_label_studio_can_send_webhooks(loop, project):
    """The stack runs with WEBHOOK_SECRET (as make run does): forged events are refused and queue nothing, while
    the annotations above reached the loop through Label Studio's own webhook, and its Start Training through
    the ML connection's basic auth."""
    pid, _, _ = project
    before = _all_jobs(loop)
    body = {"action": "START_TRAINING", "project": {"id": pid}}
    url = f"{loop.backend_url}/webhook"
    forged = [
        requests.post(url, json=body, timeout=5),
        requests.post(url, json=body, headers={"X-Webhook-Secret": "guess"}, timeout=5),
        requests.post(url, json=body, auth=("label-studio", "guess"), timeout=5),
        requests.post(url, json={**body, "project": {"id": 424242}}, timeout=5),
    ]
    assert [a.status_code for a in forged] == [403] * 4
    time.sleep(2)
    assert _all_jobs(loop) == before

    # Label Studio's "Start Training" (Settings -> Model): it reaches /webhook with the connection's basic auth.
    (backend,) = [m for m in loop.ls.ml.list(project=pid) if m.url.rstrip("/") == loop.backend_url]
    loop.ls.ml.train(id=backend.id)
    deadline = time.time() + 30
    while not (new := _all_jobs(loop) - before):
        assert time.time() < deadline, "Start Training queued nothing"
        time.sleep(0.5)
    for job_id in new:
        job = _wait_job(loop, job_id, seconds=400)
        assert job.is_finished, job.latest_result().exc_string
