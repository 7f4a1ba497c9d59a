"""Jobs run by a real RQ worker (in-process, burst) against a real redis-server; Label Studio absent."""

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.job import Job, JobStatus

from backend.labels import parse_label_config
from backend.labelstudio import latest_choice
from backend.loop import training_queue
from backend.registry import Registry
from backend.settings import Settings
from backend.stack import free_port
from tests.conftest import LABEL_CONFIG

CONFIG = parse_label_config(LABEL_CONFIG)


def _choice(label, **extra):
    return {"result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}],
            **extra}


def test_latest_choice_takes_the_newest_annotation_that_was_not_skipped():
    annotations = [
        _choice("ok", id=1, updated_at="2026-01-01T10:00:00Z"),
        _choice("xenófobo", id=2, updated_at="2026-01-02T10:00:00Z"),
        {"id": 3, "updated_at": "2026-01-03T10:00:00Z", "was_cancelled": True, "result": []},
    ]
    assert latest_choice(annotations, CONFIG) == "xenófobo"
    assert latest_choice([], CONFIG) is None
    assert latest_choice([_choice("unknown class", id=1)], CONFIG) is None
    other_control = {"id": 1, "result": [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["ok"]}}]}
    assert latest_choice([other_control], CONFIG) is None


def test_label_studio_unreachable_fails_the_job_visibly_without_promoting(tmp_path, redis_server, monkeypatch):
    env = {"REDIS_URL": redis_server.url, "RQ_QUEUE": "jobs-test", "MODEL_DIR": str(tmp_path / "models"),
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "LABEL_STUDIO_API_KEY": "token",
           "LABEL_STUDIO_ATTEMPTS": "3", "LABEL_STUDIO_BACKOFF": "0.05"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    trainings = training_queue(settings, Redis.from_url(redis_server.url))
    _, job_id = trainings.request(5)
    SimpleWorker([trainings.queue], connection=trainings.redis).work(burst=True)

    job = Job.fetch(job_id, connection=trainings.redis)
    assert job.get_status() == JobStatus.FAILED
    assert "unreachable for reading the project after 3 attempts" in job.latest_result().exc_string
    assert job.meta["stage"] == "reading labels"
    assert Registry(settings.model_dir).scopes() == []
    # The run's lease is released: the next request queues a new run at once.
    assert trainings.state(5)["running"] is None
    assert trainings.request(5)[0].value == "queued"


def test_jobs_need_an_api_key(monkeypatch):
    from backend.errors import BackendError
    from backend.labelstudio import LabelStudioClient

    with pytest.raises(BackendError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioClient("http://localhost:8080", "")
