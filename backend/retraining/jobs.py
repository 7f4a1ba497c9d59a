"""RQ jobs of the retraining loop: plain functions taking only JSON-serializable arguments.

    train_project(project, tier)             labels from Label Studio -> train the tier's kinds -> promote the
                                             best -> re-score: a fast kind in this job (rescore_now), a
                                             transformer in chunk jobs that more workers share
    score_chunk(project, version, tasks)     one chunk of unlabeled tasks -> predictions of `version`, in bulk
    finish_rescoring(project, version)       after every chunk, failed ones included: the project's
                                             model_version -> `version`; a cleanup job queued (none when a chunk
                                             failed, so no task loses its score)
    delete_old_predictions(project, version) predictions of older versions of ours deleted, one version at a
                                             time, once annotators pause and no other job waits (until then
                                             only down to BACKLOG_VERSIONS; it schedules itself again, and
                                             deletes annotators waited for pace the project's next runs)
    refresh_suspects(project)                after a training run: `suspect_score` rewritten in annotated tasks
                                             the out-of-fold model doubts; left to the next run when one is due
    score_new_tasks(project)                 tasks imported into Label Studio (its TASKS_CREATED event) ->
                                             predictions of the serving version, so that they join the queue

A job reads its configuration from the environment (Settings) like the server, so the worker and the server
agree on MODEL_DIR, REDIS_URL and LABEL_STUDIO_URL. A worker killed at any point leaves the previous version
serving: promotion is the registry's atomic rename, and the project's model_version moves only after every
chunk has been written.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import torch
from label_studio_sdk.core.api_error import ApiError
from rq import Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from transformers import TrainerCallback

from ..errors import BackendError
from ..labelstudio.client import LabeledTask, LabelStudioClient, Task
from ..labelstudio.label_config import parse_label_config
from ..labelstudio.project_setup import SUSPECT_KEY, not_connected
from ..models.base import label_shortfall
from ..models.loader import load_version
from ..models.training import train_version
from ..models.transformer import TransformerClassifier
from ..predictions import NO_PREDICTION, predict_tasks
from ..registry import DEFAULT_SCOPE, Registry, Superseded, Version, scope_of
from ..settings import FAST_KINDS, Settings
from ..stopping import StopSignal
from ..suspects import out_of_fold_probabilities, suspect_scores
from .policy import FAST, FULL, RetrainPolicy, connect, enqueue_once

log = logging.getLogger(__name__)

# Predictions per Label Studio call when a fast kind re-scores in its training job (rescore_now): about 2 MB.
FAST_WRITE_BATCH = 10_000
# A task's suspect score is rewritten when it moves by this much (or crosses 0.5): fewer writes, same ranking.
SUSPECT_STEP = 0.05
# A chunk job that fails (Label Studio down past the client's own retries, a worker killed) is queued again this
# many times, then counts as failed; the switch runs either way (finish_rescoring). At once: the worker that
# failed may be gone, and another takes it.
CHUNK_RETRIES = 2
# The id of a cleanup job, before `<project>-<version>` (the switch's) and `-<random>` (those it schedules).
CLEANUP_PREFIX = "cleanup-"
# The id of a project's suspect-score job, before `<project>-<random>`: at most one waits per project.
SUSPECTS_PREFIX = "suspects-"
# Jobs that tidy up after a run, by id: a cleanup does not give way to them.
BACKGROUND = (CLEANUP_PREFIX, SUSPECTS_PREFIX)
# A suspects job that finds another training run of its project due leaves the scores to that run's own job
# (their out-of-fold models take seconds that the run would wait for), unless they are older than this: under
# annotations that keep the queue busy they are still rewritten every few minutes. Under 20 annotators (make load)
# a whole job took 30-33 s, most of it Label Studio answering slowly: with a minute here it took half the worker's
# time and the labels waited for it (docs/benchmarks.md).
SUSPECTS_MAX_AGE_SECONDS = 300
# Older versions whose predictions a cleanup leaves while annotators work or a job waits: each is one prediction
# per unlabeled task, so under hours of annotation without a pause the deletes must keep up; up to this many,
# they wait for the pause. Measured with 2,000 tasks: at 6 versions, Label Studio's next task took as long as with
# one, its Data Manager page 20% longer (docs/benchmarks.md).
BACKLOG_VERSIONS = 6


def _progress(**meta) -> None:
    """Job meta (stage, step, labels used) for rq info / rq-dashboard / the tests."""
    job = get_current_job()
    if job is not None:
        job.meta.update(meta, updated_at=time.time())
        job.save_meta()
    log.info("progress: %s", meta)


class _JobProgress(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % 5 == 0 or state.global_step == state.max_steps:
            _progress(stage="training", step=state.global_step, max_steps=state.max_steps)


def _settings() -> Settings:
    settings = Settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    return settings


def train_project(project: int, tier: str = FULL) -> dict:
    """One training run of `tier` (FAST: the fast kinds; FULL: every kind in MODEL_KINDS). Jobs enqueued before
    tiers existed carry no tier: they were full runs."""
    settings = _settings()
    job = get_current_job()
    if job is None:
        raise RuntimeError("train_project runs as an RQ job (python -m backend worker)")
    policy = RetrainPolicy.from_settings(settings, job.connection)
    with policy.run(project, job.id, tier) as holds_lease:
        if not holds_lease:
            log.info("project %s: another %s run is in progress; it will run once more after it", project, tier)
            return {"status": "deferred", "tier": tier}
        return _train(project, tier, settings, policy.queue)


def _train(project: int, tier: str, settings: Settings, queue: Queue) -> dict:
    started = time.time()
    _progress(stage="reading labels", tier=tier)
    client = LabelStudioClient.from_settings(settings)
    registry = Registry(settings.model_dir)
    scope = scope_of(project)
    problem = not_connected(client, project, registry.instance)
    if problem:
        # A webhook names any project id; only projects that use this backend get trained and written to.
        log.warning("project %s: not trained: %s", project, problem)
        _progress(stage="not connected")
        return {"status": "not_connected", "tier": tier, "reason": problem}
    # Taken before the labels are read: a run with a newer token has read newer labels.
    fence = (tier, registry.fence(scope, tier))
    xml = client.label_config(project)
    config = parse_label_config(xml)
    labeled = client.labeled_tasks(project, config)
    texts, labels = [t.text for t in labeled], [t.label for t in labeled]
    counts = Counter(labels)
    if label_shortfall(labels, config.classes, settings.min_labels_per_class):
        log.info(
            "project %s: cold start, %s labels; every class needs %d before the first training",
            project,
            dict(counts),
            settings.min_labels_per_class,
        )
        _progress(stage="waiting for labels", labels=len(labels), label_counts=dict(counts))
        return {"status": "cold_start", "label_counts": dict(counts), "needed_per_class": settings.min_labels_per_class}
    unlabeled = client.unlabeled(project, config)
    read_seconds = time.time() - started

    # The project's own version: the default scope's (which serves projects without one) was measured on other
    # labels, so its figure says nothing here.
    serving = registry.current(scope)
    kinds = (settings.fast_kinds or settings.kinds) if tier == FAST else settings.kinds
    _progress(stage="training", labels=len(labels), kinds=kinds)
    try:
        outcome = train_version(
            texts,
            labels,
            config.classes,
            kinds=kinds,
            settings=settings,
            registry=registry,
            scope=scope,
            unlabeled=[t.text for t in unlabeled],
            warm_from=_warm_start(registry, scope, config.classes, settings),
            serving=serving,
            callbacks=[_JobProgress()],
            fence=fence,
        )
    except Superseded as exc:
        log.warning("project %s: nothing promoted: %s", project, exc)
        _progress(stage="superseded")
        return {"status": "superseded", "tier": tier, "reason": str(exc), "labels": len(labels)}
    result: dict[str, Any] = {
        "status": "kept" if outcome.version is None else "promoted",
        "tier": tier,
        "decision": outcome.decision,
        "labels": len(labels),
        "label_counts": dict(counts),
        "candidates": [
            {k: c.get(k) for k in ("kind", "score", "evaluated_on", "train_seconds")} for c in outcome.candidates
        ],
        "read_seconds": round(read_seconds, 2),
    }
    if outcome.version is not None:
        version = outcome.version
        result["version"] = version.name
        result["pruned"] = registry.prune(scope, keep=settings.keep_versions)
        _log_progress(project, version, settings.stop_rule.judge(registry.history(scope)))
        if version.kind in FAST_KINDS:
            result["rescored"] = rescore_now(project, version.name, settings, xml=xml, tasks=unlabeled)
        else:
            result["rescoring_chunks"] = enqueue_rescoring(
                project, version.name, settings, queue, xml=xml, tasks=unlabeled
            )
        _progress(stage="promoted", version=version.name, labels=len(labels))
    elif (
        serving is not None
        and client.model_version(project) != serving.name
        and not switch_pending(queue, project, serving.name)
    ):
        # The serving version never reached Label Studio (its re-scoring failed, or a rollback did not re-score):
        # a run with nothing new to promote finishes that job, or the queue would stay on the older version.
        log.info("project %s: Label Studio is not on %s yet; re-scoring with it", project, serving.name)
        if serving.kind in FAST_KINDS:
            result["rescored"] = rescore_now(project, serving.name, settings, xml=xml, tasks=unlabeled)
        else:
            result["rescoring_chunks"] = enqueue_rescoring(
                project, serving.name, settings, queue, xml=xml, tasks=unlabeled
            )
    if settings.suspect_scores:
        result["suspects"] = enqueue_suspects(project, queue)
    result["seconds"] = round(time.time() - started, 2)
    log.info("project %s: %s", project, result)
    return result


def enqueue_suspects(project: int, queue: Queue) -> str:
    """Queue the project's suspect-score job behind this run (the run's switch never waits for it)."""
    return enqueue_once(queue, SUSPECTS_PREFIX, refresh_suspects, project, "suspect scores")[0]


def score_new_tasks(project: int) -> dict:
    """Predictions of the serving version for the project's unlabeled tasks that have none: tweets imported into
    Label Studio after the last re-scoring. Label Studio 1.23 asks a backend for predictions only when an
    annotator opens a task, and its uncertainty sampling takes only tasks with a prediction of the project's
    model_version, so until the next training such tweets would be neither in the queue nor in the score order.
    A version promoted meanwhile re-scores every unlabeled task anyway."""
    settings = _settings()
    client = LabelStudioClient.from_settings(settings)
    registry = Registry(settings.model_dir)
    problem = not_connected(client, project, registry.instance)
    if problem:
        log.warning("project %s: new tasks not scored: %s", project, problem)
        return {"status": "not_connected", "reason": problem}
    serving = registry.resolve(project)
    if serving is None:
        return {"status": "no_model"}  # cold start: the first training scores every task
    xml = client.label_config(project)
    new = client.unlabeled(project, parse_label_config(xml), unscored=True)
    size = max(settings.rescore_chunk, FAST_WRITE_BATCH if serving.kind in FAST_KINDS else 0)
    chunks = [
        score_chunk(project, serving.name, xml, [[t.id, t.text] for t in new[i : i + size]])
        for i in range(0, len(new), size)
    ]
    result = {
        "status": "written" if new else "nothing_new",
        "version": serving.name,
        "tasks": len(new),
        "predictions": sum(c.get("predictions", 0) for c in chunks),
    }
    log.info("project %s: new tasks scored: %s", project, result)
    return result


def refresh_suspects(project: int) -> dict:
    """The suspect scores of every annotated task, from the labels Label Studio has now (flag_suspects). Left to
    the next run's own job when one is due and the scores are younger than SUSPECTS_MAX_AGE_SECONDS: asked before
    reading the labels, before the out-of-fold models and before each write, the seconds a waiting run would wait
    for (scores written before it stopped stay; the next job writes the rest)."""
    settings = _settings()
    job = get_current_job()
    policy = RetrainPolicy.from_settings(settings, job.connection if job is not None else None)

    def can_wait() -> dict | None:
        age = policy.suspects_age(project)
        if policy.run_due(project) and age is not None and age < SUSPECTS_MAX_AGE_SECONDS:
            return {"status": "left to the next run", "age_seconds": round(age, 1)}
        return None

    if waiting := can_wait():
        return waiting
    client = LabelStudioClient.from_settings(settings)
    try:
        config = parse_label_config(client.label_config(project))
        labeled, unlabeled = client.labeled_tasks(project, config), client.unlabeled(project, config)
    except BackendError as exc:  # Label Studio down past its retries, or the project deleted since the run
        log.warning("project %s: suspect scores not refreshed (%s); the next training retries", project, exc)
        return {"status": "failed", "reason": str(exc)}
    if waiting := can_wait():
        return waiting
    result = flag_suspects(client, project, config.classes, labeled, unlabeled, settings, give_way=can_wait)
    if result["status"] == "written":
        policy.suspects_written(project)
    log.info("project %s: suspect scores %s", project, result)
    return result


def flag_suspects(
    client: LabelStudioClient,
    project: int,
    classes: Sequence[str],
    labeled: list[LabeledTask],
    unlabeled: list[Task],
    settings: Settings,
    give_way: Callable[[], dict | None] | None = None,
) -> dict:
    """Write `suspect_score` into the data of annotated tasks the out-of-fold model doubts (score > 0.5), and
    update it where it moved by SUSPECT_STEP or crossed 0.5, so the "Possibly mislabeled" tab follows the labels
    with few writes. A failure is logged, never fatal. `give_way`, asked before each write (one request each,
    seconds in all): an answer stops the writes there, and is the result."""
    started = time.time()
    texts, labels = [t.text for t in labeled], [t.label for t in labeled]
    probs = out_of_fold_probabilities(texts, labels, classes, settings=settings, unlabeled=[t.text for t in unlabeled])
    if probs is None:
        return {"status": "too few labels"}
    scores = suspect_scores(probs, labels, classes)
    written = 0
    try:
        for task, score in zip(labeled, scores, strict=True):
            score = round(float(score), 2)
            old = task.data.get(SUSPECT_KEY)
            old = float(old) if isinstance(old, int | float) else None
            if (old is None and score > 0.5) or (
                old is not None and (abs(score - old) >= SUSPECT_STEP or (old > 0.5) != (score > 0.5))
            ):
                if give_way is not None and (waiting := give_way()):
                    return {**waiting, "written": written}
                client.update_task_data(task.id, {**task.data, SUSPECT_KEY: score})
                written += 1
    except BackendError as exc:
        log.warning("project %s: suspect scores not written (%s); the next training retries", project, exc)
        return {"status": "failed", "written": written}
    flagged = int((scores > 0.5).sum())
    return {"status": "written", "flagged": flagged, "written": written, "seconds": round(time.time() - started, 2)}


def _log_progress(project: int, version: Version, signal: StopSignal) -> None:
    meta = version.metadata
    kappa, share = meta.get("kappa_previous"), meta.get("uncertain_share")
    log.info(
        "project %s: %s promoted; kappa to the previous version %s; %s of %s unlabeled tasks uncertain (%s). %s",
        project,
        version.name,
        "-" if kappa is None else f"{kappa:.3f}",
        meta.get("uncertain"),
        meta.get("unlabeled"),
        "-" if share is None else f"{share:.1%}",
        signal.sentence,
    )


def _warm_start(registry: Registry, scope: str, classes: Sequence[str], settings: Settings) -> Version | None:
    """The project's newest transformer version for the same classes (else the default scope's serving one),
    which a transformer fine-tunes (fast) instead of MODEL_NAME (from scratch), whatever kind serves now."""
    if not settings.warm_start:
        return None
    for version in [*reversed(registry.versions(scope)), registry.current(DEFAULT_SCOPE)]:
        if version is None:
            continue
        meta = version.metadata
        if version.kind == TransformerClassifier.kind and sorted(meta.get("classes", [])) == sorted(classes):
            return version
    return None


def enqueue_rescoring(
    project: int,
    version: str,
    settings: Settings,
    queue: Queue,
    *,
    xml: str | None = None,
    tasks: list[Task] | None = None,
) -> int:
    """Split the unlabeled tasks (read from Label Studio unless given) into chunk jobs and a final job that runs
    when all of them have ended. Nothing when a re-scoring with `version` is still pending (a second rollback to
    it, a run that finds Label Studio not switched yet): the same predictions twice would be two rows each."""
    if switch_pending(queue, project, version):
        log.info("project %s: a re-scoring with %s is already under way", project, version)
        return 0
    if xml is None or tasks is None:
        client = LabelStudioClient.from_settings(settings)
        xml = xml or client.label_config(project)
        tasks = client.unlabeled(project, parse_label_config(xml))
    size = settings.rescore_chunk
    chunk_jobs = [
        queue.enqueue_call(
            score_chunk,
            timeout=settings.train_timeout,
            retry=Retry(max=CHUNK_RETRIES),
            description=f"score {len(part)} tasks of project {project} with {version}",
            kwargs={
                "project": project,
                "version": version,
                "label_config": xml,
                "tasks": [[t.id, t.text] for t in part],
            },
        )
        for part in (tasks[i : i + size] for i in range(0, len(tasks), size))
    ]
    queue.enqueue_call(
        finish_rescoring,
        kwargs={"project": project, "version": version},
        job_id=_switch_id(project, version),
        # It runs once every chunk has ended, failed ones included: a failed chunk never holds back the switch.
        depends_on=Dependency(jobs=chunk_jobs, allow_failure=True) if chunk_jobs else None,
        description=f"switch project {project} to {version}",
    )
    _progress(stage="re-scoring enqueued", version=version, unlabeled=len(tasks), chunks=len(chunk_jobs))
    return len(chunk_jobs)


def _switch_id(project: int, version: str) -> str:
    return f"switch-{project}-{version}"


def switch_pending(queue: Queue, project: int, version: str) -> bool:
    """Whether the final job of a re-scoring of `project` with `version` is waiting or running."""
    try:
        status = Job.fetch(_switch_id(project, version), connection=queue.connection).get_status()
    except NoSuchJobError:
        return False
    return status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.STARTED, JobStatus.SCHEDULED)


def _serving(project: int, version: str, settings: Settings) -> Version | None:
    """The registry's version `version` if it still serves the project; None once a newer one was promoted."""
    serving = Registry(settings.model_dir).resolve(project)
    return serving if serving is not None and serving.name == version else None


def rescore_now(project: int, version: str, settings: Settings, *, xml: str, tasks: list[Task]) -> dict:
    """A fast kind's re-scoring, inside the training job: the chunk and switch functions the queue would run,
    called in turn, without the job hand-offs (a linear version scores thousands of tweets in a fraction of a
    second; writing to Label Studio is the rest). The project switches only after every chunk is written.
    Chunks of at least FAST_WRITE_BATCH tasks: Label Studio 1.23 recounts every task of the project on each
    prediction import, so 2,000 predictions take 1.9 s in one call and 6.6 s in four (docs/benchmarks.md)."""
    size = max(settings.rescore_chunk, FAST_WRITE_BATCH)
    chunks, failed = [], 0
    for i in range(0, len(tasks), size):
        try:
            chunks.append(score_chunk(project, version, xml, [[t.id, t.text] for t in tasks[i : i + size]]))
        except Exception:  # Label Studio refused the write after its retries: the other chunks still go in
            log.exception("project %s: re-scoring tasks %d-%d with %s failed", project, i, i + size, version)
            failed += 1
    switch_started = time.time()
    final = finish_rescoring(project, version, failed_chunks=failed)
    return {
        "chunks": len(chunks) + failed,
        "failed_chunks": failed,
        "predictions": sum(c.get("predictions", 0) for c in chunks),
        "score_seconds": round(sum(c.get("score_seconds", 0) for c in chunks), 2),
        "write_seconds": round(sum(c.get("seconds", 0) - c.get("score_seconds", 0) for c in chunks), 2),
        "switch": final["status"],
        "switch_seconds": round(time.time() - switch_started, 2),
    }


def score_chunk(project: int, version: str, label_config: str, tasks: list[list]) -> dict:
    settings = _settings()
    serving = _serving(project, version, settings)
    if serving is None:
        return {"status": "superseded", "version": version}
    started = time.time()
    config = parse_label_config(label_config)
    classifier = load_version(serving, settings)
    _progress(stage="scoring", version=version, tasks=len(tasks))
    results = predict_tasks(
        classifier,
        config,
        [{"id": i, "data": {config.data_key: text}} for i, text in tasks],
        strategy=settings.uncertainty,
        max_chars=settings.max_text_chars,
    )
    predictions = [
        {"task": task_id, **result}
        for (task_id, _), result in zip(tasks, results, strict=True)
        if result is not NO_PREDICTION
    ]
    scored = time.time() - started
    LabelStudioClient.from_settings(settings).write_predictions(project, predictions)
    return {
        "status": "written",
        "version": version,
        "predictions": len(predictions),
        "score_seconds": round(scored, 2),
        "seconds": round(time.time() - started, 2),
    }


def finish_rescoring(project: int, version: str, failed_chunks: int = 0) -> dict:
    settings = _settings()
    job = get_current_job()
    if job is not None and job.dependency_ids:
        # Chunk jobs that failed after their retries (a killed worker's count too, once RQ notices).
        failed_chunks += sum(d.get_status() != JobStatus.FINISHED for d in job.fetch_dependencies())
    _progress(stage="switching", version=version, failed_chunks=failed_chunks)
    client = LabelStudioClient.from_settings(settings)
    if _serving(project, version, settings) is None:
        # A newer version was promoted meanwhile; its own final job switches the project.
        _delete(client, project, [version], settings)
        return {"status": "superseded", "version": version}
    versions = client.model_versions(project)
    if not versions.get(version):
        # Label Studio refuses a model_version without predictions: a project with every task labeled has none.
        log.info("project %s: no unlabeled task to score; its model_version stays as it is", project)
        _progress(stage="done", version=version, scored=0)
        return {"status": "nothing to score", "version": version}
    client.set_model_version(project, version)
    if failed_chunks:
        log.error(
            "project %s: switched to %s, but %d re-scoring chunk(s) failed (rq-dashboard's failed jobs say why): "
            "older predictions are kept so those tasks keep a score; the next training re-scores them",
            project,
            version,
            failed_chunks,
        )
        _progress(stage="done", version=version, failed_chunks=failed_chunks)
        return {"status": "switched", "version": version, "failed_chunks": failed_chunks, "deleted_versions": []}
    # Label Studio keeps the predictions of the serving version only (docs/active-learning.md says why). Deleting
    # takes it about 10 ms a prediction: not on the path of the next training (docs/benchmarks.md).
    cleanup = _enqueue_cleanup(settings, project, version)
    _progress(stage="done", version=version, cleanup=cleanup.id)
    return {"status": "switched", "version": version, "cleanup": cleanup.id}


def _queue(settings: Settings) -> Queue:
    job = get_current_job()
    return Queue(settings.rq_queue, connection=job.connection if job is not None else connect(settings))


def _enqueue_cleanup(settings: Settings, project: int, version: str, *, delay: float = 0) -> Job:
    """The cleanup after the switch to `version`: now, or in `delay` seconds (RQ's scheduler, which every worker
    runs, enqueues it then) under an id of its own, since the one it follows may still be running."""
    queue = _queue(settings)
    options: dict[str, Any] = {
        "kwargs": {"project": project, "version": version},
        "job_timeout": settings.train_timeout,
        "description": f"delete older predictions of project {project} than {version}",
    }
    if delay <= 0:
        return queue.enqueue(delete_old_predictions, job_id=f"{CLEANUP_PREFIX}{project}-{version}", **options)
    later = f"{CLEANUP_PREFIX}{project}-{version}-{uuid.uuid4().hex[:8]}"
    return queue.enqueue_in(datetime.timedelta(seconds=delay), delete_old_predictions, job_id=later, **options)


def delete_old_predictions(project: int, version: str) -> dict:
    """Delete the predictions of our versions other than `version`, oldest first, one version at a time, while
    the project is on `version` (after a newer switch, that switch's own cleanup does it). Label Studio on SQLite
    holds its database for the length of each delete and annotators' next task waits, so while an annotation
    came less than CLEANUP_IDLE_SECONDS ago, or another job waits, it deletes only down to BACKLOG_VERSIONS older
    versions (hours of annotation do not pile them up) and schedules itself again for when the pause would begin.
    What it deleted while annotators worked paces the project's next runs (CLEANUP_SHARE).
    One queue, not a second one of lower priority: RQ takes jobs from several queues with BLPOP, and a job a
    worker took just before dying is then lost (with one queue it moves the job with LMOVE and finds it again)."""
    settings = _settings()
    client = LabelStudioClient.from_settings(settings)
    if client.model_version(project) != version:
        return {"status": "superseded", "version": version, "deleted_versions": []}
    # Only ours: the names with this MODEL_DIR's instance id.
    registry = Registry(settings.model_dir)
    # Label Studio lists the newest first.
    old = [name for name in client.model_versions(project) if name != version and registry.ours(name)][::-1]
    queue = _queue(settings)
    policy = RetrainPolicy.from_settings(settings, queue.connection)
    deleted: list[str] = []
    # Seconds spent deleting while annotators work: what they waited for.
    waited_for = 0.0
    for left, name in zip(range(len(old), 0, -1), old, strict=True):
        # Another cleanup or a suspects job waiting is no reason to stop: background work too, which waits anyway.
        busy = any(not job.startswith(BACKGROUND) for job in queue.get_job_ids())
        idle = policy.idle_seconds()
        pause_in = 0.0 if idle is None else settings.cleanup_idle_seconds - idle
        if (busy or pause_in > 0) and left <= BACKLOG_VERSIONS:
            _pace(policy, project, waited_for, settings)
            later = _enqueue_cleanup(settings, project, version, delay=max(pause_in, 1))
            why = "a job waits" if busy else f"an annotation came {idle:.0f} s ago"
            log.info("project %s: %s; %d older version(s) left to %s", project, why, left, later.id)
            return {"status": "waiting", "version": version, "deleted_versions": deleted, "next": later.id}
        start = time.monotonic()
        deleted += _delete(client, project, [name], settings)
        if pause_in > 0:
            waited_for += time.monotonic() - start
        _progress(stage="deleting", version=version, deleted_versions=deleted)
    _pace(policy, project, waited_for, settings)
    return {"status": "done", "version": version, "deleted_versions": deleted}


def _pace(policy: RetrainPolicy, project: int, waited_for: float, settings: Settings) -> None:
    """Past BACKLOG_VERSIONS, every switch under annotation costs a delete annotators wait for: the project's next
    run waits long enough for those deletes to take at most CLEANUP_SHARE of the time (the run itself included,
    since it follows the wait)."""
    wait = waited_for * (1 - settings.cleanup_share) / settings.cleanup_share
    if wait > 0:
        policy.pace(project, wait)
        log.info("project %s: deletes took %.0f s while annotators work; runs wait %.0f s", project, waited_for, wait)


def _delete(client: LabelStudioClient, project: int, names: list[str], settings: Settings) -> list[str]:
    """Delete the predictions of `names`; those Label Studio did not delete are logged and left to the next
    switch's cleanup, which deletes every older version of ours: a failed delete never fails a job."""
    deleted = []
    for name in names:
        try:
            client.delete_predictions(project, name, timeout=settings.train_timeout)
            deleted.append(name)
        except (BackendError, ApiError, httpx.HTTPError) as exc:
            log.warning("project %s: predictions of %s not deleted (%s); the next switch retries", project, name, exc)
    return deleted
