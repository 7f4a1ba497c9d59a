"""Jobs run by a real RQ worker (in-process, burst) against a real redis-server; Label Studio absent, or a stand-in
that fails the way a test needs (the e2e tests run the jobs against a real one)."""

import time

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.job import Job, JobStatus

from backend.errors import LabelStudioUnavailable, UnknownProject
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


def test_a_paced_run_is_started_by_the_worker_s_scheduler_under_the_training_lease(tmp_path, redis_server, monkeypatch):
    """What `python -m backend worker` (a worker with RQ's scheduler) does with a run that waits for the pace: it
    runs once its time has come, as a training run of its project (here one that finds no Label Studio)."""
    _, trainings = _no_label_studio(tmp_path, redis_server, monkeypatch)
    trainings.pace(5, 2)  # RQ's schedule keeps whole seconds (cut): due in 1-2 s
    decision, job_id = trainings.request(5)
    worker = SimpleWorker([trainings.queue], connection=trainings.redis)
    worker.work(burst=True, with_scheduler=True)
    assert (
        decision.value == "queued" and Job.fetch(job_id, connection=trainings.redis).get_status() == JobStatus.SCHEDULED
    )
    time.sleep(2.1)
    worker.work(burst=True, with_scheduler=True)
    job = Job.fetch(job_id, connection=trainings.redis)
    assert job.get_status() == JobStatus.FAILED and job.meta["stage"] == "reading labels"
    assert trainings.state(5) == {"new": None, "queued": None, "running": None, "rerun": None}


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
    tasks = [jobs.Task(i, f"tweet {i}") for i in range(4)]
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
    tasks = [jobs.Task(i, f"tweet {i}") for i in range(4)]
    settings = Settings(rescore_chunk=2, model_dir=tmp_path)
    assert jobs.enqueue_rescoring(1, "abc123-project1-v2", settings, queue, xml=LABEL_CONFIG, tasks=tasks) == 2
    assert jobs.switch_pending(queue, 1, "abc123-project1-v2")
    assert jobs.enqueue_rescoring(1, "abc123-project1-v2", settings, queue, xml=LABEL_CONFIG, tasks=tasks) == 0
    assert len(queue) == 2  # the two chunks; the final job waits for them
    assert jobs.enqueue_rescoring(1, "abc123-project1-v3", settings, queue, xml=LABEL_CONFIG, tasks=tasks) == 2


def test_a_fast_kind_writes_its_predictions_in_few_large_calls(monkeypatch):
    """Label Studio recounts the whole project on every prediction import: rescore_now writes at least
    FAST_WRITE_BATCH predictions per call, whatever RESCORE_CHUNK (the transformer's job size) says, and a
    failed call is counted without stopping the others."""
    from backend.retraining import jobs

    calls = []

    def score_chunk(project, version, xml, tasks):
        calls.append(len(tasks))
        if len(calls) == 2:
            raise RuntimeError("Label Studio refused the write")
        return {"predictions": len(tasks), "score_seconds": 0.1, "seconds": 0.3}

    monkeypatch.setattr(jobs, "score_chunk", score_chunk)
    monkeypatch.setattr(jobs, "finish_rescoring", lambda project, version, failed_chunks: {"status": "switched"})
    tasks = [jobs.Task(i, f"tweet {i}") for i in range(12)]
    result = jobs.rescore_now(1, "abc123-project1-v2", Settings(rescore_chunk=5), xml=LABEL_CONFIG, tasks=tasks)
    assert calls == [12] and result["chunks"] == 1 and result["predictions"] == 12
    calls.clear()
    monkeypatch.setattr(jobs, "FAST_WRITE_BATCH", 5)
    result = jobs.rescore_now(1, "abc123-project1-v2", Settings(rescore_chunk=2), xml=LABEL_CONFIG, tasks=tasks)
    assert calls == [5, 5, 2] and result["chunks"] == 3 and result["failed_chunks"] == 1
    assert result["predictions"] == 7


class _LabelStudio:
    """What finish_rescoring and not_connected ask of Label Studio, with its failures chosen by the test."""

    def __init__(self, versions, refuse=(), current="", delete_seconds=0.0):
        self.versions, self.refuse, self.switched_to, self.deleted = versions, refuse, current or None, []
        self.delete_seconds = delete_seconds

    def model_version(self, project):
        return self.switched_to or ""

    def model_versions(self, project):
        return dict(self.versions)

    def set_model_version(self, project, version):
        self.switched_to = version

    def delete_predictions(self, project, version, *, timeout=None):
        if version in self.refuse:
            raise LabelStudioUnavailable(f"Label Studio answered 500 for deleting predictions of {version}")
        time.sleep(self.delete_seconds)
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
    """Label Studio deletes about 150 predictions a second: the switch queues that as a job, which gives way to
    any job waiting, so the next annotation's run does not queue behind it."""
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


def _scheduled(queue) -> dict[str, float]:
    """{job id: seconds from now} of the jobs RQ's scheduler will enqueue. RQ keeps whole seconds (the time is
    cut, not rounded), so a job due in 1 s may read as up to a second less."""
    from rq.registry import ScheduledJobRegistry

    registry = ScheduledJobRegistry(queue=queue)
    return {i: registry.get_scheduled_time(i).timestamp() - time.time() for i in registry.get_job_ids()}


def test_a_cleanup_waits_for_annotators_to_pause_but_never_piles_up_versions(tmp_path, redis_server, monkeypatch):
    """Label Studio on SQLite holds its database while it deletes, and annotators' next task waits: while they
    annotate, the cleanup deletes only what is past BACKLOG_VERSIONS and schedules itself for the pause, and the
    project's next run waits twice as long as those deletes took (CLEANUP_SHARE: a third of the time)."""
    from rq import Queue

    from backend.retraining.policy import LAST_ANNOTATION_KEY
    from tests.helpers import v

    registry = Registry(tmp_path)
    *old, new = (v(registry, "1", n) for n in range(1, 10))
    # Label Studio lists the newest first.
    studio = _LabelStudio({name: 20 for name in [new, *old[::-1]]}, current=new, delete_seconds=0.2)
    jobs, settings = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    assert settings.cleanup_idle_seconds == 60 and jobs.BACKLOG_VERSIONS == 6 == len(old) - 2
    queue = Queue(settings.rq_queue, connection=Redis.from_url(redis_server.url))
    policy = RetrainPolicy.from_settings(settings, queue.connection)
    policy.on_event(2, "ANNOTATION_CREATED")  # any project's

    result = jobs.delete_old_predictions(1, new)
    assert result["status"] == "waiting" and result["deleted_versions"] == old[:2] == studio.deleted
    assert result["next"].startswith(f"cleanup-1-{new}-")
    assert 55 < _scheduled(queue)[result["next"]] <= 60 and queue.job_ids == []
    # Two deletes of 0.2 s while annotators work: for them to be a third of the time, runs wait about 0.8 s.
    assert settings.cleanup_share == 0.33 and 0.6 < policy.paced_for(1) <= 0.85 and policy.paced_for(2) == 0
    # The pause began 20 s ago: nothing waits, so the rest go, oldest first (1.4 s, past the pace), and no one
    # waited for them.
    queue.connection.set(LAST_ANNOTATION_KEY, time.time() - 80)
    assert jobs.delete_old_predictions(1, new) == {"status": "done", "version": new, "deleted_versions": old[2:]}
    assert studio.deleted == old and list(studio.versions) == [new] and policy.paced_for(1) == 0


def test_a_cleanup_gives_way_to_a_waiting_training_and_skips_a_project_switched_since(
    tmp_path, redis_server, monkeypatch
):
    from rq import Queue

    from tests.helpers import v

    registry = Registry(tmp_path)
    v1, v2, new, newer = (v(registry, "1", n) for n in range(1, 5))
    studio = _LabelStudio({new: 20, v2: 20, v1: 20}, current=new)
    jobs, settings = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    queue = Queue(settings.rq_queue, connection=Redis.from_url(redis_server.url))
    other_cleanup = queue.enqueue(print, "another project's cleanup", job_id="cleanup-2-abc-project2-v5")
    suspects = queue.enqueue(print, "suspect scores", job_id="suspects-1-0123456789ab")
    waiting = queue.enqueue(print, "a training")
    # No annotation for a week (or ever), but a training waits: it goes first, the cleanup a second later.
    result = jobs.delete_old_predictions(1, new)
    assert result["status"] == "waiting" and studio.deleted == []
    assert -1 < _scheduled(queue)[result["next"]] <= 1
    waiting.delete()
    # Other background jobs waiting (a cleanup, suspect scores) are no reason to stop.
    assert jobs.delete_old_predictions(1, new)["deleted_versions"] == [v1, v2] == studio.deleted
    other_cleanup.delete()
    suspects.delete()
    studio.deleted.clear()
    studio.versions[v2] = 20
    studio.switched_to = newer  # a newer switch queued its own cleanup, which deletes both
    assert jobs.delete_old_predictions(1, new)["status"] == "superseded" and studio.deleted == []
    studio.switched_to = new
    assert jobs.delete_old_predictions(1, new)["deleted_versions"] == [v2] == studio.deleted


def test_a_scheduled_cleanup_runs_when_rq_s_scheduler_enqueues_it(tmp_path, redis_server, monkeypatch):
    """What the worker's scheduler (`python -m backend worker` runs one) does with the job the cleanup left."""
    from rq import Queue

    from tests.helpers import v

    registry = Registry(tmp_path)
    old, new = v(registry, "1", 1), v(registry, "1", 2)
    studio = _LabelStudio({new: 20, old: 20}, current=new)
    jobs, settings = _cleanup_setup(tmp_path, redis_server, monkeypatch, studio)
    queue = Queue(settings.rq_queue, connection=Redis.from_url(redis_server.url))
    later = jobs._enqueue_cleanup(settings, 1, new, delay=1)
    assert later.get_status() == JobStatus.SCHEDULED and queue.job_ids == []
    time.sleep(1.2)
    SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True)
    assert Job.fetch(later.id, connection=queue.connection).return_value() == {
        "status": "done",
        "version": new,
        "deleted_versions": [old],
    }
    assert studio.deleted == [old]


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
        self.tasks = [LabeledTask(i, t, y, {"text": t}) for i, (t, y) in enumerate(zip(texts, labels, strict=True))]
        self.reads, self.updates = 0, {}

    def label_config(self, project):
        return LABEL_CONFIG

    def labeled_tasks(self, project, config):
        self.reads += 1
        return self.tasks

    def unlabeled(self, project, config):
        return []

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
    assert 5 in studio.updates and studio.updates[5]["suspect_score"] > 0.5 and studio.updates[5]["text"]
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
    read = studio.labeled_tasks
    monkeypatch.setattr(studio, "labeled_tasks", lambda project, config: (policy.request(1), read(project, config))[1])
    assert jobs.refresh_suspects(1)["status"] == "left to the next run" and studio.reads == 4
    # One that becomes due while the scores are written (a request each): the writes stop there.
    monkeypatch.setattr(studio, "labeled_tasks", read)
    queue.empty()
    policy.redis.delete("al:1:fast:queued")
    for task in studio.tasks:
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
