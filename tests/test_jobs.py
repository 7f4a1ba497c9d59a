"""Jobs run by a real RQ worker (in-process, burst) against a real redis-server; Label Studio absent, or a stand-in
that fails the way a test needs (the e2e tests run the jobs against a real one)."""

import time

import numpy as np
import pytest
from redis import Redis
from rq import SimpleWorker
from rq.job import Job, JobStatus

from backend.errors import LabelStudioUnavailable, UnknownProject
from backend.labelstudio.label_config import parse_label_config
from backend.registry import Registry
from backend.retraining.policy import RetrainPolicy
from backend.settings import Settings
from backend.stack.processes import free_port
from tests.helpers import LABEL_CONFIG


def _no_label_studio(tmp_path, redis_server, monkeypatch) -> tuple[Settings, RetrainPolicy]:
    """The environment a worker reads (jobs take their settings from it), with nothing at LABEL_STUDIO_URL."""
    env = {
        "REDIS_URL": redis_server.url,
        "RQ_QUEUE": "jobs-test",
        "MODEL_DIR": str(tmp_path / "models"),
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",
        "LABEL_STUDIO_API_KEY": "token",
        "LABEL_STUDIO_ATTEMPTS": "3",
        "LABEL_STUDIO_BACKOFF": "0.05",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    return settings, RetrainPolicy.from_settings(settings, Redis.from_url(redis_server.url))


def test_label_studio_unreachable_fails_the_job_visibly_without_promoting(tmp_path, redis_server, monkeypatch):
    settings, trainings = _no_label_studio(tmp_path, redis_server, monkeypatch)
    _, job_id = trainings.request(5)
    SimpleWorker([trainings.queue], connection=trainings.redis).work(burst=True)

    job = Job.fetch(job_id, connection=trainings.redis)
    assert job.get_status() == JobStatus.FAILED
    assert "unreachable for listing ML backends after 3 attempts" in job.latest_result().exc_string
    assert job.meta["stage"] == "reading labels"
    assert Registry(settings.model_dir).scopes() == []
    # The run's lease is released: the next request queues a new run at once.
    assert trainings.state(5)["running"] is None
    assert trainings.request(5)[0].value == "queued"


def test_jobs_enqueued_under_their_old_path_still_run(redis_server):
    """Jobs persisted in Redis before the move name `backend.jobs.*`: a worker of this version still finds them."""
    from rq import Queue

    from backend.retraining import jobs

    queue = Queue("old-jobs", connection=Redis.from_url(redis_server.url))
    job = queue.enqueue_call("backend.jobs.finish_rescoring", kwargs={"project": 1, "version": "project1-v1"})
    assert job.func is jobs.finish_rescoring


def test_a_transformer_warm_starts_from_the_newest_transformer_whatever_serves(tmp_path):
    from backend.retraining.jobs import _warm_start

    class Stub:
        def __init__(self, kind):
            self.kind = kind

        def save(self, folder):
            (folder / "weights").write_text("w")

    registry = Registry(tmp_path)
    classes = {"classes": ["ok", "xenófobo"]}
    older = registry.store("3", Stub("transformer"), classes)
    registry.store("3", Stub("linear"), classes)  # serving now
    assert _warm_start(registry, "3", ["xenófobo", "ok"], Settings()).name == older.name
    assert _warm_start(registry, "3", ["ok", "spam"], Settings()) is None
    assert _warm_start(registry, "3", ["ok", "xenófobo"], Settings(warm_start=False)) is None
    assert _warm_start(registry, "4", ["ok", "xenófobo"], Settings()) is None  # nothing of its own, no default


def test_failed_chunks_are_retried_and_never_hold_back_the_switch(tmp_path, redis_server, monkeypatch):
    """A chunk that keeps failing (here: a version whose weights do not load) is retried, then fails; the final
    job runs anyway and counts it (it then fails too, on the absent Label Studio, which is what it reaches next)."""
    from rq import Queue

    from backend.retraining import jobs

    class Broken:
        kind = "linear"

        def save(self, folder):
            (folder / "linear.npz").write_bytes(b"not a model")

    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "token")
    monkeypatch.setenv("LABEL_STUDIO_ATTEMPTS", "1")
    version = Registry(tmp_path / "models").store("1", Broken(), {"classes": ["ok", "xenófobo"]}).name
    queue = Queue("chunks-test", connection=Redis.from_url(redis_server.url))
    tasks = [[i, f"tweet {i}"] for i in range(4)]
    assert jobs.enqueue_rescoring(1, version, Settings(rescore_chunk=2), queue, xml=LABEL_CONFIG, tasks=tasks) == 2
    SimpleWorker([queue], connection=queue.connection).work(burst=True)

    chunks = [Job.fetch(i, connection=queue.connection) for i in queue.failed_job_registry.get_job_ids()]
    final = [j for j in chunks if j.func_name.endswith("finish_rescoring")]
    chunks = [j for j in chunks if j.func_name.endswith("score_chunk")]
    assert len(chunks) == 2 and all(j.retries_left == 0 for j in chunks)
    assert len(final) == 1 and final[0].meta["failed_chunks"] == 2
    assert "listing model versions" in final[0].latest_result().exc_string


def test_a_re_scoring_already_under_way_is_not_enqueued_twice(tmp_path, redis_server):
    """Two rollbacks to one version (or a run finding Label Studio not switched yet while the switch is queued)
    would write every prediction twice."""
    from rq import Queue

    from backend.retraining import jobs

    queue = Queue("twice-test", connection=Redis.from_url(redis_server.url))
    tasks = [[i, f"tweet {i}"] for i in range(4)]
    settings = Settings(rescore_chunk=2, model_dir=tmp_path)
    assert jobs.enqueue_rescoring(1, "abc123-project1-v2", settings, queue, xml=LABEL_CONFIG, tasks=tasks) == 2
    assert jobs.switch_pending(queue, 1, "abc123-project1-v2")
    assert jobs.enqueue_rescoring(1, "abc123-project1-v2", settings, queue, xml=LABEL_CONFIG, tasks=tasks) == 0
    assert len(queue) == 2  # the two chunks; the final job waits for them
    assert jobs.enqueue_rescoring(1, "abc123-project1-v3", settings, queue, xml=LABEL_CONFIG, tasks=tasks) == 2


class _LabelStudio:
    """What finish_rescoring and not_connected ask of Label Studio, with its failures chosen by the test."""

    def __init__(self, versions, refuse=(), current=""):
        self.versions, self.refuse, self.switched_to, self.deleted = versions, refuse, current or None, []
        self.written: list[list[dict]] = []

    def model_version(self, project):
        return self.switched_to or ""

    def model_versions(self, project):
        return dict(self.versions)

    def set_model_version(self, project, version):
        self.switched_to = version

    def write_predictions(self, project, predictions):
        self.written.append(predictions)
        for p in predictions:
            self.versions[p["model_version"]] = self.versions.get(p["model_version"], 0) + 1

    def delete_predictions(self, project, version, *, timeout=None):
        if version in self.refuse:
            raise LabelStudioUnavailable(f"Label Studio answered 500 for deleting predictions of {version}")
        self.deleted.append(version)
        self.versions.pop(version, None)

    def ml_backend_urls(self, project):
        raise UnknownProject(f"Label Studio at http://ls has no project {project} this token reads")


def _cleanup_setup(tmp_path, redis_server, monkeypatch, studio):
    from backend.retraining import jobs

    settings = Settings(model_dir=tmp_path, redis_url=redis_server.url, rq_queue="cleanup-test")
    monkeypatch.setattr(jobs, "_settings", lambda: settings)
    monkeypatch.setattr(jobs, "_serving", lambda project, version, settings: object())
    monkeypatch.setattr(jobs.LabelStudioClient, "from_settings", classmethod(lambda cls, settings: studio))
    return jobs, settings


def test_the_switch_leaves_deleting_old_predictions_to_a_job_of_its_own(tmp_path, redis_server, monkeypatch):
    """The run that switched is done before Label Studio deletes the older window: the switch queues that as a
    job of its own."""
    from rq import Queue

    from tests.helpers import v

    registry = Registry(tmp_path)
    old, new = v(registry, "1", 1), v(registry, "1", 2)
    studio = _LabelStudio({old: 20, new: 20})
    jobs, settings = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    result = jobs.finish_rescoring(1, new)
    assert result["status"] == "switched" and studio.switched_to == new and studio.deleted == []
    queue = Queue(settings.rq_queue, connection=Redis.from_url(redis_server.url))
    assert queue.job_ids == [result["cleanup"]] == [f"cleanup-1-{new}"]
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert Job.fetch(result["cleanup"], connection=queue.connection).return_value()["deleted_versions"] == [old]
    assert studio.deleted == [old]


def test_a_cleanup_label_studio_refuses_never_fails_and_only_ours_are_deleted(
    tmp_path, redis_server, monkeypatch, caplog
):
    """Deleting 20,000 old predictions takes Label Studio minutes; when it fails, the project has switched
    already: the version not deleted is logged, and the next switch's cleanup deletes it."""
    from tests.helpers import v

    registry = Registry(tmp_path)
    old, older, new = v(registry, "1", 2), v(registry, "1", 1), v(registry, "1", 3)
    studio = _LabelStudio({older: 10, old: 20, new: 20, "someone-else-v9": 5}, refuse={old}, current=new)
    jobs, _ = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    with caplog.at_level("WARNING"):
        result = jobs.delete_old_predictions(1, new)
    assert result == {"status": "done", "version": new, "deleted_versions": [older]} and studio.deleted == [older]
    assert f"predictions of {old} not deleted" in caplog.text


def test_a_cleanup_skips_a_project_switched_since(tmp_path, redis_server, monkeypatch):
    from tests.helpers import v

    registry = Registry(tmp_path)
    v1, v2, new, newer = (v(registry, "1", n) for n in range(1, 5))
    studio = _LabelStudio({newer: 20, new: 20, v2: 20, v1: 20}, current=newer)
    jobs, _ = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    # A newer switch queued its own cleanup, which deletes all three.
    assert jobs.delete_old_predictions(1, new)["status"] == "superseded" and studio.deleted == []
    assert jobs.delete_old_predictions(1, newer)["deleted_versions"] == [v1, v2, new] == studio.deleted


def test_a_round_writes_the_window_of_all_its_chunks_and_nothing_else(tmp_path, redis_server, monkeypatch):
    """Chunk jobs (several workers share a transformer's scoring) each keep their QUEUE_WINDOW most uncertain
    predictions; the final job writes the QUEUE_WINDOW most uncertain of those, which are the window of the whole
    pool, and the fast kind's inline re-scoring writes the same; the newest task scored is recorded."""
    from rq import Queue

    from backend.models.linear import LinearClassifier, LinearConfig
    from backend.uncertainty import margin
    from tests.helpers import pool_texts, read_demo

    rows = read_demo("tweets_labeled.csv")
    classifier = LinearClassifier.fit(
        [r["text"] for r in rows], [r["label"] for r in rows], ["ok", "xenófobo"], config=LinearConfig()
    )
    version = Registry(tmp_path).store("1", classifier, {"classes": ["ok", "xenófobo"]}).name
    texts = pool_texts(40)
    tasks = [[100 + i, text] for i, text in enumerate(texts)]
    margins = margin(classifier.predict_proba(texts))
    expected = {100 + i for i in np.argsort(margins)[:6]}

    studio = _LabelStudio({})
    jobs, _ = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    settings = Settings(model_dir=tmp_path, redis_url=redis_server.url, rq_queue="cleanup-test", queue_window=6)
    monkeypatch.setattr(jobs, "_settings", lambda: settings)
    monkeypatch.setattr(jobs, "_serving", lambda project, version, settings: Registry(tmp_path).current("1"))
    queue = Queue(settings.rq_queue, connection=Redis.from_url(redis_server.url))
    chunked = settings.model_copy(update={"rescore_chunk": 7})
    assert jobs.enqueue_rescoring(1, version, chunked, queue, xml=LABEL_CONFIG, tasks=tasks, through=150) == 6
    SimpleWorker([queue], connection=queue.connection).work(burst=True)

    (written,) = studio.written
    assert {p["task"] for p in written} == expected and studio.switched_to == version
    assert [p["score"] for p in written] == sorted(p["score"] for p in written)
    assert all(p["model_version"] == version for p in written)
    policy = RetrainPolicy.from_settings(settings, queue.connection)
    assert policy.scored_through(1) == 150

    # The same from the worker's pool, whose vocabulary this version (fitted elsewhere) does not share: scored
    # from the texts.
    studio.written.clear()
    studio.tasks = lambda project, config, after=0, limit=None: [tuple(t) for t in tasks if t[0] > after][:limit]
    studio.task_count = lambda project: len(tasks)
    pool, _ = jobs.PoolStore.of(settings, 1).sync(studio, parse_label_config(LABEL_CONFIG))
    result = jobs.rescore_now(1, version, settings, xml=LABEL_CONFIG, pool=pool, through=140)
    assert result["scored"] == 40 and result["predictions"] == 6 and result["switch"] == "switched"
    assert {p["task"] for p in studio.written[0]} == expected and policy.scored_through(1) == 150


def test_an_event_for_a_project_label_studio_does_not_have_ends_as_not_connected():
    from backend.retraining import jobs

    assert "has no project 99" in jobs.not_connected(_LabelStudio({}), 99, "abc123")


class _Labels:
    """What refresh_suspects asks of Label Studio: six annotated tweets, one of them labeled against the rest."""

    def __init__(self):
        from backend.labelstudio.client import LabeledTask

        texts = ["fuera inmigrantes", "fuera los inmigrantes ya", "que se vayan los inmigrantes"]
        texts += ["buen partido hoy", "que lindo día", "fuera inmigrantes de aquí"]
        labels = ["xenófobo", "xenófobo", "xenófobo", "ok", "ok", "ok"]
        self.labeled = [
            LabeledTask(i, t, y, {"text": t}) for i, (t, y) in enumerate(zip(texts, labels, strict=True), start=1)
        ]
        self.reads, self.updates = 0, {}

    def label_config(self, project):
        return LABEL_CONFIG

    def annotated(self, project, config):
        self.reads += 1
        return self.labeled, {t.id for t in self.labeled}

    def tasks(self, project, config, after=0, limit=None):
        return [(t.id, t.text) for t in self.labeled if t.id > after][:limit]

    def task_count(self, project):
        return len(self.labeled)

    def update_task_data(self, task_id, data):
        self.updates[task_id] = data


def test_the_suspects_job_is_queued_once_per_project_and_gives_way_to_a_run_that_is_due(
    tmp_path, redis_server, monkeypatch
):
    from rq import Queue

    from backend.retraining import jobs

    settings = Settings(model_dir=tmp_path, redis_url=redis_server.url, rq_queue="suspects-test")
    studio = _Labels()
    monkeypatch.setattr(jobs, "_settings", lambda: settings)
    monkeypatch.setattr(jobs.LabelStudioClient, "from_settings", classmethod(lambda cls, settings: studio))
    queue = Queue(settings.rq_queue, connection=Redis.from_url(redis_server.url))
    first = jobs.enqueue_suspects(1, queue)
    assert jobs.enqueue_suspects(1, queue) == first and jobs.enqueue_suspects(2, queue) != first
    assert len(queue.get_job_ids()) == 2

    # Never written: written now, whatever waits. The tweet labeled ok among the xenophobic ones is doubted.
    policy = RetrainPolicy.from_settings(settings, queue.connection)
    policy.request(1)
    assert policy.run_due(1) and policy.suspects_age(1) is None
    assert jobs.refresh_suspects(1)["status"] == "written" and studio.reads == 1
    assert 6 in studio.updates and studio.updates[6]["suspect_score"] > 0.5 and studio.updates[6]["text"]
    # Written moments ago and a run due: left to that run's own job, without reading a label.
    assert jobs.refresh_suspects(1)["status"] == "left to the next run" and studio.reads == 1
    # Older than SUSPECTS_MAX_AGE_SECONDS: written again, so annotations that keep the queue busy still move the tab.
    policy.redis.set("al:1:suspects", time.time() - jobs.SUSPECTS_MAX_AGE_SECONDS - 1)
    assert jobs.refresh_suspects(1)["status"] == "written" and studio.reads == 2
    # No run due: written, however fresh.
    queue.empty()
    policy.redis.delete("al:1:fast:queued")
    assert not policy.run_due(1)
    assert jobs.refresh_suspects(1)["status"] == "written" and studio.reads == 3
    # A run that becomes due while the labels are read: left to it before the out-of-fold models.
    read = studio.annotated
    monkeypatch.setattr(studio, "annotated", lambda project, config: (policy.request(1), read(project, config))[1])
    assert jobs.refresh_suspects(1)["status"] == "left to the next run" and studio.reads == 4
    # One that becomes due while the scores are written (a request each): the writes stop there.
    monkeypatch.setattr(studio, "annotated", read)
    queue.empty()
    policy.redis.delete("al:1:fast:queued")
    for task in studio.labeled:
        task.data["suspect_score"] = 0.99  # every score moves
    studio.updates.clear()
    write = studio.update_task_data
    monkeypatch.setattr(studio, "update_task_data", lambda i, data: (write(i, data), policy.request(1)))
    assert jobs.refresh_suspects(1) == {
        "status": "left to the next run",
        "age_seconds": pytest.approx(0, abs=5),
        "written": 1,
    }
    assert len(studio.updates) == 1
