"""The retraining policy and the webhook -> RQ path, against a real redis-server started on a free port."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job

from backend.api import create_app
from backend.retraining.policy import (
    FAST,
    FULL,
    SCORE_FUNC,
    TRAIN_FUNC,
    Decision,
    RetrainPolicy,
    cadence,
    connect,
)
from backend.settings import Settings

PROJECT = 7


@pytest.fixture()
def queue(redis_server):
    return Queue("test-al", connection=Redis.from_url(redis_server.url))


def _train_jobs(queue: Queue) -> list:
    return [job for job in queue.get_jobs() if job.func_name == TRAIN_FUNC]


def test_retrain_after_every_n_annotation_events(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 3})
    assert loop.on_event(PROJECT, "PROJECT_UPDATED")[0] is Decision.IGNORED
    assert loop.on_event(PROJECT, "ANNOTATION_CREATED")[0] is Decision.COUNTED
    assert loop.on_event(PROJECT, "ANNOTATION_UPDATED")[0] is Decision.COUNTED
    decision, job_id = loop.on_event(PROJECT, "ANNOTATION_CREATED")
    assert decision is Decision.QUEUED
    (job,) = _train_jobs(queue)
    assert job.id == job_id and job.kwargs == {"project": PROJECT, "tier": FAST}
    # A bulk event counts its annotations; the counter restarted at the request.
    assert loop.on_event(PROJECT, "ANNOTATIONS_DELETED", count=2)[0] is Decision.COUNTED
    assert loop.state(PROJECT)["new"] == "2"


def test_start_training_requests_at_once_and_projects_are_independent(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 100})
    assert loop.on_event(1, "START_TRAINING")[0] is Decision.QUEUED
    assert loop.on_event(2, "START_TRAINING")[0] is Decision.QUEUED
    assert sorted(job.kwargs["project"] for job in _train_jobs(queue)) == [1, 2]


def test_the_tiers_follow_the_model_kinds():
    assert cadence(Settings(model_kinds="linear", retrain_every=10)) == {FAST: 10}
    assert cadence(Settings(model_kinds="transformer", retrain_every=10)) == {FULL: 10}
    assert cadence(Settings(model_kinds="linear,transformer", retrain_every=5, transformer_every=50)) == {
        FAST: 5,
        FULL: 50,
    }


def test_fast_runs_every_few_events_and_full_runs_less_often_and_on_start_training(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 2, FULL: 4})
    assert loop.on_event(PROJECT, "ANNOTATION_CREATED")[0] is Decision.COUNTED
    assert loop.on_event(PROJECT, "ANNOTATION_CREATED")[0] is Decision.QUEUED
    assert [j.kwargs["tier"] for j in _train_jobs(queue)] == [FAST]
    # 4 events: the full tier's turn too; the fast request joins the fast run still queued.
    assert loop.on_event(PROJECT, "ANNOTATIONS_CREATED", count=2)[0] is Decision.QUEUED
    assert sorted(j.kwargs["tier"] for j in _train_jobs(queue)) == [FAST, FULL]
    assert loop.state(PROJECT, FULL)["queued"] and loop.state(PROJECT, FAST)["queued"]
    decision, job_id = loop.on_event(9, "START_TRAINING")
    assert decision is Decision.QUEUED and Job.fetch(job_id, connection=queue.connection).kwargs["tier"] == FULL


def test_a_full_run_in_progress_does_not_hold_back_a_fast_run(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 1, FULL: 100})
    _, full_job = loop.request(PROJECT, FULL)
    with loop.run(PROJECT, full_job, FULL) as holds:
        assert holds
        decision, fast_job = loop.on_event(PROJECT, "ANNOTATION_CREATED")
        assert decision is Decision.QUEUED
        with loop.run(PROJECT, fast_job, FAST) as fast_holds:
            assert fast_holds  # beside the full run, not after it
        assert loop.request(PROJECT, FULL)[0] is Decision.FOLLOW_UP


def _concurrently(n: int, fn) -> list:
    barrier, results = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_fifty_concurrent_requests_queue_one_run_and_one_follow_up(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 1})
    decisions = [d for d, _ in _concurrently(50, lambda: loop.on_event(PROJECT, "ANNOTATION_CREATED"))]
    assert decisions.count(Decision.QUEUED) == 1 and decisions.count(Decision.JOINED) == 49
    (job,) = _train_jobs(queue)

    # The queued job starts: requests during the run all ask for a follow-up, and none is queued yet ...
    with loop.run(PROJECT, job.id) as holds:
        assert holds
        queue.empty()
        during = [d for d, _ in _concurrently(50, lambda: loop.on_event(PROJECT, "START_TRAINING"))]
        assert set(during) == {Decision.FOLLOW_UP}
        assert _train_jobs(queue) == []
        # ... and a second job for the same project does not run beside it.
        with loop.run(PROJECT, "intruder") as second:
            assert not second
    # ... until the run ends: exactly one follow-up.
    assert len(_train_jobs(queue)) == 1
    assert loop.state(PROJECT)["running"] is None


def test_a_run_without_new_requests_queues_nothing(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 1})
    _, job_id = loop.request(PROJECT)
    queue.empty()
    with loop.run(PROJECT, job_id):
        pass
    assert _train_jobs(queue) == []


def test_a_lost_queued_job_is_replaced(queue, monkeypatch):
    loop = RetrainPolicy(queue, cadence={FAST: 1})
    _, lost = loop.request(PROJECT)
    queue.empty()  # deletes the job too
    # Within the grace period the job may still be on its way into RQ: join it.
    assert loop.request(PROJECT) == (Decision.JOINED, lost)
    monkeypatch.setattr("backend.retraining.policy.ENQUEUE_GRACE_SECONDS", 0)
    decision, job_id = loop.request(PROJECT)
    assert decision is Decision.QUEUED and [j.id for j in _train_jobs(queue)] == [job_id]


def test_the_newest_scored_task_never_moves_back(queue):
    """A round that read Label Studio before an import may end after the import's job scored it."""
    loop = RetrainPolicy(queue, cadence={FAST: 1})
    assert loop.scored_through(PROJECT) == 0  # none known: every task without a prediction is new
    loop.scored(PROJECT, 120)
    loop.scored(PROJECT, 80)
    assert loop.scored_through(PROJECT) == 120 and loop.scored_through(PROJECT + 1) == 0
    loop.scored(PROJECT, 121)
    assert loop.scored_through(PROJECT) == 121


@pytest.mark.slow
def test_a_killed_runs_lease_expires(queue, redis_server, tmp_path):
    """A worker killed mid-training (SIGKILL: no cleanup) blocks new runs only until its lease ends."""
    holder = textwrap.dedent(f"""
        import time
        from redis import Redis
        from rq import Queue
        from backend.retraining.policy import RetrainPolicy
        loop = RetrainPolicy(Queue("test-al", connection=Redis.from_url({redis_server.url!r})), lease_seconds=1.5)
        with loop.run({PROJECT}, "doomed") as holds:
            print("holding", holds, flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding True"
        time.sleep(2)  # longer than the lease: the holder's renewals keep it alive
        loop = RetrainPolicy(queue, cadence={FAST: 1})
        assert loop.request(PROJECT)[0] is Decision.FOLLOW_UP
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 5
    while loop.state(PROJECT)["running"] and time.time() < deadline:
        time.sleep(0.1)
    assert loop.state(PROJECT)["running"] is None
    assert loop.request(PROJECT)[0] is Decision.QUEUED


def _webhook(client, action: str, project: int = PROJECT, **extra):
    return client.post("/webhook", json={"action": action, "project": {"id": project}, **extra})


def test_imported_tasks_queue_one_scoring_job_per_project_and_no_training(queue):
    loop = RetrainPolicy(queue, cadence={FAST: 1})
    decision, job_id = loop.on_event(PROJECT, "TASKS_CREATED")
    assert decision is Decision.QUEUED and job_id.startswith(f"score-{PROJECT}-")
    # A second import while it waits: that job reads the tasks when it starts, so it scores these too.
    assert loop.on_event(PROJECT, "TASKS_CREATED") == (Decision.JOINED, job_id)
    assert loop.on_event(PROJECT + 1, "TASKS_CREATED")[0] is Decision.QUEUED
    jobs = queue.get_jobs()
    assert [j.func_name for j in jobs] == [SCORE_FUNC] * 2
    assert [j.kwargs for j in jobs] == [{"project": PROJECT}, {"project": PROJECT + 1}]
    assert not _train_jobs(queue)  # an import is not an annotation
    # Once it has started (no longer waiting), an import queues the next one.
    queue.remove(job_id)
    assert loop.on_event(PROJECT, "TASKS_CREATED")[0] is Decision.QUEUED


def test_webhooks_enqueue_training_through_the_app(trained_model_dir, redis_server):
    settings = Settings(model_dir=trained_model_dir, redis_url=redis_server.url, rq_queue="test-al", retrain_every=2)
    client = create_app(settings).test_client()
    first = _webhook(client, "ANNOTATION_CREATED", annotation={"id": 1}, task={"id": 1})
    assert first.status_code == 200 and first.json["status"] == "counted"
    second = _webhook(client, "ANNOTATION_CREATED", annotation={"id": 2}, task={"id": 2})
    assert second.json["status"] == "queued" and second.json["job"].startswith(f"train-{PROJECT}-")
    # "Start Training" while that job waits joins it; Label Studio shows the job id it answers.
    button = _webhook(client, "START_TRAINING")
    assert button.json == {
        "status": "joined",
        "action": "START_TRAINING",
        "project": PROJECT,
        "job": second.json["job"],
    }
    queue = RetrainPolicy.from_settings(settings).queue
    assert [j.id for j in _train_jobs(queue)] == [second.json["job"]]
    # The project id may also come from the annotation alone.
    bare = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "annotation": {"id": 3, "project": 9}})
    assert bare.json["project"] == 9
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ml_backend_webhooks_total{action="START_TRAINING",decision="joined"}' in metrics


def test_fifty_concurrent_webhooks_queue_one_job(trained_model_dir, redis_server):
    settings = Settings(model_dir=trained_model_dir, redis_url=redis_server.url, rq_queue="test-al", retrain_every=1)
    app = create_app(settings)
    answers = _concurrently(50, lambda: _webhook(app.test_client(), "ANNOTATION_CREATED", annotation={"id": 1}))
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.json["status"] for a in answers).count("queued") == 1
    assert len({a.json["job"] for a in answers}) == 1
    assert len(_train_jobs(RetrainPolicy.from_settings(settings).queue)) == 1


def test_redis_down_answers_503_within_a_second_then_recovers(trained_model_dir, redis_server):
    settings = Settings(model_dir=trained_model_dir, redis_url=redis_server.url, rq_queue="test-al", retrain_every=1)
    client = create_app(settings).test_client()
    assert _webhook(client, "START_TRAINING").json["status"] == "queued"

    redis_server.stop()
    started = time.perf_counter()
    down = _webhook(client, "ANNOTATION_CREATED", annotation={"id": 5})
    elapsed = time.perf_counter() - started
    assert down.status_code == 503 and "Redis" in down.json["error"]
    assert elapsed < 1.0, f"503 took {elapsed:.2f} s; Label Studio gives up after 1 s"

    # Redis back (empty: it keeps nothing here): the next event catches up with a fresh job.
    redis_server.start()
    again = _webhook(client, "START_TRAINING")
    assert again.status_code == 200 and again.json["status"] == "queued"
    assert len(_train_jobs(Queue("test-al", connection=connect(settings)))) == 1


def test_every_key_of_the_policy_expires(queue):
    """Counters of forged or abandoned project ids stayed in Redis forever."""
    loop = RetrainPolicy(queue, cadence={FAST: 3})
    loop.on_event(424242, "ANNOTATION_CREATED")
    loop.on_event(PROJECT, "START_TRAINING")
    loop.scored(PROJECT, 7)
    with loop.run(PROJECT, "another-job", FAST) as _:
        loop.on_event(PROJECT, "START_TRAINING")  # during a run: a follow-up is due
    redis = queue.connection
    keys = [k.decode() for k in redis.keys("al:*")]
    assert {"al:424242:fast:new", f"al:{PROJECT}:fast:queued", f"al:{PROJECT}:scored-through"} <= set(keys)
    assert all(0 < redis.ttl(k) <= 7 * 24 * 3600 for k in keys), {k: redis.ttl(k) for k in keys}


def test_deleted_tasks_wait_for_the_pool_and_queue_nothing(trained_model_dir, redis_server, monkeypatch):
    """TASKS_DELETED (Label Studio's Data Manager, its API): the ids wait in Redis for the pool's next sync; a
    forged or odd entry is dropped, and the ids kept are bounded."""
    settings = Settings(model_dir=trained_model_dir, redis_url=redis_server.url, rq_queue="test-del")
    client = create_app(settings).test_client()
    tasks = [{"id": 5}, {"id": 6}, {"id": "7"}, {"id": True}, {"id": -1}, "8", {"other": 9}]
    answer = _webhook(client, "TASKS_DELETED", tasks=tasks)
    assert answer.status_code == 200 and answer.json["status"] == "counted"
    policy = RetrainPolicy.from_settings(settings)
    assert policy.deleted_ids(PROJECT) == {5, 6} and len(policy.queue) == 0
    policy.forget_deleted(PROJECT, {5})
    assert policy.deleted_ids(PROJECT) == {6}
    monkeypatch.setattr("backend.retraining.policy.MAX_DELETED_IDS", 3)
    policy.deleted(PROJECT, [10, 11, 12, 13])
    assert policy.deleted_ids(PROJECT) == {6, 10, 11}
