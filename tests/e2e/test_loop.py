"""The active-learning loop end to end, on the stack `make run` starts: a real Label Studio, a real redis-server,
real RQ workers and the backend under gunicorn. Annotations made through Label Studio's API reach /webhook as
Label Studio sends them.
"""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
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
from tests.helpers import CONFIG, LABEL_CONFIG, child_pids, kill_tree, read_demo, v

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
    connect_backend(
        ls, created.id, loop.backend_url, backend_auth=loop.backend_auth, webhook_secret=loop.webhook_secret
    )
    ls.projects.update(id=created.id, sampling="Uncertainty sampling")
    return created.id, list(zip(ids[:12], [r["label"] for r in to_label], strict=True)), ids[12:]


def _wait_job(loop, job_id: str, seconds: float = 120) -> Job:
    """Until the job has ended; one not in RQ yet is waited for (a switch queues its cleanup just after it)."""
    from rq.exceptions import NoSuchJobError

    redis = connect(Settings(redis_url=loop.redis_url))
    deadline = time.time() + seconds
    status = "not in RQ"
    while time.time() < deadline:
        try:
            job = Job.fetch(job_id, connection=redis)
        except NoSuchJobError:
            time.sleep(0.5)
            continue
        if job.is_finished or job.is_failed:
            return job
        status = job.get_status()
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {status}")


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
    version = v(Registry(loop.model_dir), str(pid), 1)
    loop.wait_version(pid, version)
    print(f"annotation -> linear version's window in Label Studio: {time.time() - last_annotation:.1f} s")

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
            f"{loop.backend_url}/setup",
            json={"project": f"{pid}.1700000000", "schema": LABEL_CONFIG},
            auth=loop.backend_auth,
            timeout=5,
        )
        assert setup.json()["model_version"] == version

    # The window: the QUEUE_WINDOW unlabeled tasks the new version is least sure of carry one prediction of it,
    # scored by its margin; the others none.
    window = int(loop.env["QUEUE_WINDOW"])
    assert window < len(unlabeled)
    classifier = load_version(current, Settings(), dtype="float32")
    config = parse_label_config(LABEL_CONFIG)
    scores, margins = {}, {}
    for task in loop.ls.tasks.list(project=pid, fields="all", page_size=100):
        if task.id not in unlabeled:
            continue
        probs = class_probabilities(classifier, config, [task.data["text"]])[0]
        margins[task.id] = abs(probs[0] - probs[1])
        predictions = [_as_dict(p) for p in task.predictions]
        if not predictions:
            continue
        assert [p["model_version"] for p in predictions] == [version], f"task {task.id}: {predictions}"
        assert predictions[0]["score"] == pytest.approx(margins[task.id], abs=1e-4)
        assert predictions[0]["result"][0]["value"]["choices"] == [config.classes[int(np.argmax(probs))]]
        scores[task.id] = predictions[0]["score"]
    assert len(scores) == window and sorted(margins) == sorted(unlabeled)
    outside = [margin for task, margin in margins.items() if task not in scores]
    assert max(scores.values()) <= min(outside) + 1e-4, (scores, margins)

    # Uncertainty sampling now serves the task the new model is least sure of.
    answer = requests.get(
        f"{loop.ls_url}/api/projects/{pid}/next", headers={"Authorization": f"Token {loop.token}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == min(scores, key=scores.get)


def test_each_round_writes_its_window_and_deletes_the_previous_one(loop, tmp_path):
    """A round writes the predictions of its window only (QUEUE_WINDOW tasks, whatever the pool's size), and the
    cleanup job after the switch deletes the previous version's window at once."""
    window = int(loop.env["QUEUE_WINDOW"])
    labeled = read_demo("tweets_labeled.csv")[:30]
    pool = [r["text"] for r in read_demo("tweets_pool.csv")[:60]]
    created = loop.ls.projects.create(title="e2e window", label_config=LABEL_CONFIG)
    # Seen once: an import made while the worker wrote another project's suspect scores kept its tasks but lost
    # their annotations (Label Studio on SQLite); the import waits for a quiet queue, and its labels are checked.
    _wait_idle(loop)
    answer = loop.ls.projects.import_tasks(
        id=created.id,
        request=[
            {"data": {"text": r["text"]}, "annotations": [{"result": [CONFIG.region(r["label"])]}]} for r in labeled
        ]
        + [{"data": {"text": t}} for t in pool],
        return_task_ids=True,
    )
    pid, unlabeled = created.id, list(answer.task_ids)[len(labeled) :]
    assert loop.ls.projects.get(id=pid).total_annotations_number == len(labeled)
    connect_backend(loop.ls, pid, loop.backend_url, backend_auth=loop.backend_auth, webhook_secret=loop.webhook_secret)
    registry = Registry(loop.model_dir)
    for number in (1, 2):  # RETRAIN_EVERY (10) annotations start a fast run
        for task_id in unlabeled[(number - 1) * 10 : number * 10]:
            loop.ls.annotations.create(id=task_id, result=[CONFIG.region("ok")])
        last = time.time()
        loop.wait_version(pid, v(registry, str(pid), number))
        print(f"annotation -> switch: {time.time() - last:.1f} s")
    first, second = v(registry, str(pid), 1), v(registry, str(pid), 2)
    cleanup = _wait_job(loop, f"cleanup-{pid}-{second}").return_value()
    assert cleanup == {"status": "done", "version": second, "deleted_versions": [first]}, cleanup
    assert _model_versions(loop, pid) == {second: window} and len(pool) - 20 > window

    # Two tasks of the window deleted in Label Studio: its TASKS_DELETED event keeps their ids for the next round's
    # pool, which drops them without listing the project's ids (the count agrees), and its window holds neither.
    deleted = sorted(t for t, versions in _unlabeled_predictions(loop, pid).items() if versions)[:2]
    for task_id in deleted:
        loop.ls.tasks.delete(id=str(task_id))
    annotated = [t for t in unlabeled[20:] if t not in deleted][:10]
    for task_id in annotated:
        loop.ls.annotations.create(id=task_id, result=[CONFIG.region("ok")])
    third = v(registry, str(pid), 3)
    loop.wait_version(pid, third)
    redis = connect(Settings(redis_url=loop.redis_url))
    deadline, runs = time.time() + 60, []
    while not runs and time.time() < deadline:  # the run's job ends a moment after its switch
        answers = [Job.fetch(i, connection=redis).return_value() or {} for i in _all_jobs(loop)]
        runs = [a for a in answers if a.get("version") == third and "pool" in a]
        time.sleep(0.5)
    (run,) = runs
    assert not run["pool"]["reconciled"] and run["pool"]["removed"] == 2, run["pool"]
    assert run["pool"]["unlabeled"] == len(pool) - 30 - 2
    written = _unlabeled_predictions(loop, pid)
    assert not set(deleted) & set(written) and sum(third in p for p in written.values()) == window
    # export reads every unlabeled tweet from the worker's pool, scored by the serving version.
    table = tmp_path / "export.csv"
    env = {**os.environ, **loop.env}
    done = subprocess.run(
        [sys.executable, "-m", "backend", "export", "--project", str(pid), "--out", str(table)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert sorted(int(r["id"]) for r in rows) == sorted(set(unlabeled[20:]) - set(annotated) - set(deleted))


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
    versions = requests.get(
        f"{loop.backend_url}/versions", params={"project": pid}, auth=loop.backend_auth, timeout=5
    ).json()
    assert versions["details"][-1]["decision"] == Registry(loop.model_dir).versions(str(pid))[-1].metadata["decision"]


def _training_on_a_new_worker(loop, pid: int, until_step: int, **overrides):
    """Replace the worker by one with `overrides`, press Start Training, and return that worker once the run has
    trained `until_step` steps."""
    stop(loop.worker)
    worker = loop.start_worker(**overrides)
    job_id = loop.webhook("START_TRAINING", pid)["job"]
    redis = connect(Settings(redis_url=loop.redis_url))
    deadline = time.time() + 180
    while (Job.fetch(job_id, connection=redis).meta.get("step") or 0) < until_step:
        assert time.time() < deadline, loop.worker_log
        time.sleep(0.2)
    return worker


def test_worker_killed_mid_training_keeps_the_previous_version(loop, project):
    pid, _, unlabeled = project
    before = Registry(loop.model_dir).current(str(pid)).name
    # One new label: a run on the serving version's own labels would have nothing to learn and end at once.
    loop.ls.annotations.create(id=unlabeled[-1], result=[CONFIG.region("ok")])
    # A worker whose training (the full run's transformer) lasts long enough to be killed in the middle of it.
    _training_on_a_new_worker(loop, pid, until_step=2, TRAIN_MIN_STEPS=100000)
    kill_tree(loop.worker.pid)  # the worker and its work horse (RQ gives the horse a session of its own)
    loop.worker.wait()

    registry = Registry(loop.model_dir)
    versions_before = [v.name for v in registry.versions(str(pid))]
    assert registry.current(str(pid)).name == before and versions_before[-1] == before
    assert loop.project_version(pid) == before
    setup = requests.post(
        f"{loop.backend_url}/setup",
        json={"project": str(pid), "schema": LABEL_CONFIG},
        auth=loop.backend_auth,
        timeout=5,
    )
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
    # Label Studio keeps the predictions of the serving version only (the cleanup job after the switch).
    deadline = time.time() + 60
    while True:
        versions = requests.get(
            f"{loop.ls_url}/api/projects/{pid}/model-versions/",
            headers={"Authorization": f"Token {loop.token}"},
            timeout=30,
        ).json()
        if set(versions) == {after} or time.time() > deadline:
            break
        time.sleep(0.5)
    # Its window: one was labeled above.
    assert versions == {after: min(int(loop.env["QUEUE_WINDOW"]), len(unlabeled) - 1)}, versions


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


def test_an_event_for_a_project_without_this_backend_trains_nothing(loop):
    """Even with the secret, an event names any project id: only projects this backend is connected to (asked
    of Label Studio) are trained, written to and switched."""
    rows = read_demo("tweets_labeled.csv")[:40]
    created = loop.ls.projects.create(title="e2e not connected", label_config=LABEL_CONFIG)
    loop.ls.projects.import_tasks(
        id=created.id,
        request=[{"data": {"text": r["text"]}, "annotations": [{"result": [CONFIG.region(r["label"])]}]} for r in rows],
    )
    job = _wait_job(loop, loop.webhook("START_TRAINING", created.id)["job"])
    result = job.return_value()
    assert result["status"] == "not_connected" and "no ML backend connected" in result["reason"], result
    assert not (loop.model_dir / str(created.id)).exists()
    assert _model_versions(loop, created.id) == {}


def _model_versions(loop, project: int) -> dict:
    return requests.get(
        f"{loop.ls_url}/api/projects/{project}/model-versions/",
        headers={"Authorization": f"Token {loop.token}"},
        timeout=30,
    ).json()


def _unlabeled_predictions(loop, project: int) -> dict[int, list[str]]:
    """{unlabeled task id: the model versions of its predictions}, as Label Studio holds them."""
    return {
        task.id: [_as_dict(p)["model_version"] for p in task.predictions]
        for task in loop.ls.tasks.list(project=project, fields="all", page_size=1000)
        if not task.total_annotations
    }


def test_tweets_with_lone_surrogates_are_scored_trained_on_and_switched(loop, tmp_path):
    """Broken emoji in a scraped CSV (a lone UTF-16 surrogate, written as the bytes ED A0 BD): setup-project
    imports the tweets and their labels, Start Training trains on them, every one is scored and the project
    switches. (Through
    Label Studio's own JSON import a lone surrogate is stored as is, and Label Studio 1.23 then answers 500 to
    every task list of that project, its own Data Manager included: README, Troubleshooting.)"""
    labeled = read_demo("tweets_labeled.csv")
    rows = [r for r in labeled if r["label"] == "xenófobo"][:5] + [r for r in labeled if r["label"] == "ok"][:25]
    texts = [r["text"][:12] + "\ud83d" + r["text"][12:] if i % 2 == 0 else r["text"] for i, r in enumerate(rows)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows([t, r["label"] if i < 12 else ""] for i, (t, r) in enumerate(zip(texts, rows, strict=True)))
    table = tmp_path / "scraped.csv"
    table.write_bytes(out.getvalue().encode("utf-8", "surrogatepass"))
    env = {**os.environ, **loop.env}
    setup = [sys.executable, "-m", "backend", "setup-project", "--csv", str(table), "--title", "e2e poison pill"]
    done = subprocess.run([*setup, "--backend-url", loop.backend_url], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (project,) = [p for p in loop.ls.projects.list() if p.title == "e2e poison pill"]
    loop.webhook("START_TRAINING", project.id)  # what the Start Training button sends
    version = v(Registry(loop.model_dir), str(project.id), 1)
    loop.wait_version(project.id, version)
    assert Registry(loop.model_dir).current(str(project.id)).metadata["labels_used"] == 12
    # The window the worker wrote on import (the default version's) goes with the switch's cleanup.
    _wait_job(loop, f"cleanup-{project.id}-{version}")
    scored = _unlabeled_predictions(loop, project.id)
    assert len(scored) == 18 and all(versions == [version] for versions in scored.values()), scored
    stored = [t.data["text"] for t in loop.ls.tasks.list(project=project.id, fields="all", page_size=100)]
    assert sum("\ufffd" in t for t in stored) == 15
    # /predict, as Label Studio sends a stored lone surrogate (JSON-escaped), costs that task nothing either.
    body = {"tasks": [{"id": 1, "data": {"text": texts[0]}}], "project": str(project.id), "label_config": LABEL_CONFIG}
    answer = requests.post(
        f"{loop.backend_url}/predict",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        auth=loop.backend_auth,
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["results"][0]["model_version"] == version, answer.text


def _label_and_train(loop, task_id: int, label: str) -> dict:
    pid = loop.ls.tasks.get(id=str(task_id)).project
    loop.ls.annotations.create(id=task_id, result=[CONFIG.region(label)])
    job = _wait_job(loop, loop.webhook("START_TRAINING", pid)["job"], seconds=400)
    assert job.is_finished, job.latest_result().exc_string
    return job.return_value()


def _serves(loop, pid: int, want_status: str, seconds: float = 60) -> str:
    """Ask /predict (every gunicorn process notices on its own requests) until /health says `want_status`; returns
    the model_version /predict answered."""
    deadline = time.time() + seconds
    while True:
        answer = requests.post(
            f"{loop.backend_url}/predict",
            json={"tasks": [{"id": 1, "data": {"text": "hola"}}], "project": str(pid), "label_config": LABEL_CONFIG},
            auth=loop.backend_auth,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        health = requests.get(f"{loop.backend_url}/health", timeout=5).json()
        if health["status"] == want_status:
            return answer.json()["model_version"]
        assert time.time() < deadline, health
        time.sleep(0.2)


def test_a_broken_current_or_a_deleted_version_keeps_serving_and_the_next_run_repairs_it(loop, project):
    pid, _, unlabeled = project
    scope = str(pid)
    registry = Registry(loop.model_dir)
    newest = registry.versions(scope)[-1].name
    # CURRENT naming no version (a bad manual edit, a half-restored backup): the newest version that loads serves.
    (loop.model_dir / scope / "CURRENT").write_text("garbage\n")
    assert _serves(loop, pid, "DEGRADED") == newest
    result = _label_and_train(loop, unlabeled[-2], "ok")
    assert result["status"] == "promoted", result
    repaired = result["version"]
    loop.wait_version(pid, repaired)
    assert registry.current(scope).name == repaired and _serves(loop, pid, "UP") == repaired

    # The serving version's folder deleted: the one before it serves, and the next run promotes as usual.
    shutil.rmtree(registry.current(scope).path)
    assert _serves(loop, pid, "DEGRADED") == newest
    result = _label_and_train(loop, unlabeled[-3], "ok")
    assert result["status"] == "promoted", result
    loop.wait_version(pid, result["version"])
    assert _serves(loop, pid, "UP") == result["version"]

    # A switch that never reached Label Studio (every chunk failed): the next run, with nothing new to learn,
    # promotes nothing but finishes the re-scoring.
    # (Label Studio takes as model_version only a version with predictions or a connected backend's title.)
    (backend,) = [m for m in loop.ls.ml.list(project=pid) if m.url.rstrip("/") == loop.backend_url]
    # After the run's cleanup job: Label Studio 1.23 empties a model_version that names a backend's title
    # whenever any version's predictions are deleted (Project.delete_predictions), and fills an empty one with
    # the version of the next predictions imported; once in CI (2026-11-26) the change below, made while that
    # job deleted predictions, was gone when the next run read the project (it found the serving version).
    _wait_idle(loop)
    loop.ls.projects.update(id=pid, model_version=backend.title)
    kept = _wait_job(loop, loop.webhook("START_TRAINING", pid)["job"], seconds=400).return_value()
    assert kept["status"] == "kept" and ("rescored" in kept or "rescoring_chunks" in kept), kept
    loop.wait_version(pid, result["version"])


def _wait_idle(loop, seconds: float = 120) -> None:
    """Until no job waits, runs or is scheduled on the loop's queue."""
    from rq import Queue

    queue = Queue(loop.env.get("RQ_QUEUE", "ml-backend"), connection=connect(Settings(redis_url=loop.redis_url)))
    deadline = time.time() + seconds
    # A cleanup waiting for annotators to pause is scheduled: RQ enqueues it later.
    while queue.count or queue.started_job_registry.count or queue.scheduled_job_registry.count:
        assert time.time() < deadline, loop.worker_log
        time.sleep(0.2)


def _signal_tree(pid: int, sig: int) -> None:
    todo = [pid]
    while todo:
        current = todo.pop()
        todo += child_pids(current)
        os.kill(current, sig)


def test_a_run_that_lost_its_lease_to_a_redis_flush_never_promotes_over_a_newer_run(loop, project):
    pid, _, unlabeled = project
    scope = str(pid)
    loop.ls.annotations.create(id=unlabeled[-4], result=[CONFIG.region("xenófobo")])
    slow = _training_on_a_new_worker(loop, pid, until_step=5, TRAIN_MIN_STEPS=60)
    redis = connect(Settings(redis_url=loop.redis_url))
    # The run is paused mid-training, and Redis loses every key (a flush, a failover to an empty replica).
    _signal_tree(slow.pid, signal.SIGSTOP)
    try:
        redis.flushall()
        loop.start_worker()
        answer = loop.webhook("START_TRAINING", pid)
        assert answer["status"] == "queued", answer  # the lease went with the flush: a second run starts
        newer = _wait_job(loop, answer["job"], seconds=400).return_value()
        assert newer["status"] == "promoted", newer
    finally:
        _signal_tree(slow.pid, signal.SIGCONT)
    # The paused run resumes with older labels and a lost lease: it trains to the end, and promotes nothing.
    deadline = time.time() + 300
    while f"project {pid}: nothing promoted: a newer full run" not in (log := loop.worker_log):
        assert time.time() < deadline, log
        time.sleep(1)
    registry = Registry(loop.model_dir)
    assert registry.current(scope).name == newer["version"] == registry.versions(scope)[-1].name
    kill_tree(slow.pid)
    slow.wait()


def test_a_worker_killed_mid_chunk_delays_the_switch_but_never_blocks_it(loop, project):
    """A rollback re-scores in chunk jobs (one task each here, so the worker is killed inside one); the killed
    chunk is found by RQ's maintenance and retried, and the final switch runs."""
    from rq import Queue
    from rq.registry import StartedJobRegistry

    pid, _, _ = project
    registry = Registry(loop.model_dir)
    before = loop.project_version(pid)
    target = [v.name for v in registry.versions(str(pid)) if v.name != before][-1]
    stop(loop.worker)
    env = {**os.environ, **loop.env, "RESCORE_CHUNK": "1"}
    rollback = [sys.executable, "-m", "backend", "rollback", "--project", str(pid), "--to", target]
    subprocess.run(rollback, env=env, check=True, capture_output=True, timeout=120)
    redis = connect(Settings(redis_url=loop.redis_url))
    started = StartedJobRegistry(queue=Queue(loop.env.get("RQ_QUEUE", "ml-backend"), connection=redis))
    doomed = loop.start_worker()
    deadline = time.time() + 180
    while not any(Job.fetch(i, connection=redis).func_name.endswith("score_chunk") for i in started.get_job_ids()):
        assert time.time() < deadline, loop.worker_log
        time.sleep(0.02)
    kill_tree(doomed.pid)
    doomed.wait()
    assert loop.project_version(pid) == before  # Label Studio stays on the previous version meanwhile
    loop.start_worker()
    loop.wait_version(pid, target, seconds=400)
    # The older predictions go in the cleanup job that the switch queues; the target's window stays.
    window = min(int(loop.env["QUEUE_WINDOW"]), len(_unlabeled_predictions(loop, pid)))
    deadline = time.time() + 60
    while True:
        scored = _unlabeled_predictions(loop, pid)
        if sorted(map(tuple, scored.values())) == [()] * (len(scored) - window) + [(target,)] * window:
            break
        assert time.time() < deadline, scored
        time.sleep(1)
