"""RQ jobs of the retraining loop: plain functions taking only JSON-serializable arguments.

    train_project(project, tier)             labels from Label Studio -> train the tier's kinds -> promote the
                                             best -> re-score: a fast kind in this job (rescore_now), a
                                             transformer in chunk jobs that more workers share
    score_chunk(project, version, tasks)     one chunk of unlabeled tasks scored by `version`: its QUEUE_WINDOW
                                             most uncertain predictions (nothing written)
    finish_rescoring(project, version)       after every chunk, failed ones included: the window (the
                                             QUEUE_WINDOW most uncertain of all chunks) written to Label Studio,
                                             the project's model_version -> `version`, a cleanup job queued
    delete_old_predictions(project, version) the predictions of older versions of ours deleted: a window each
    refresh_suspects(project)                after a training run: `suspect_score` rewritten in annotated tasks
                                             the out-of-fold model doubts; left to the next run when one is due
    score_new_tasks(project)                 tasks imported into Label Studio (its TASKS_CREATED event) ->
                                             the window of them, predicted by the serving version, joins the queue

Label Studio holds predictions of the serving version for a window of the most uncertain unlabeled tasks only
(QUEUE_WINDOW), not for every task: its uncertainty sampling takes only tasks with a prediction of the project's
model_version, most uncertain first, and an annotator who opens any other task gets a prediction from /predict on
the spot. So a round writes and deletes a window's worth of predictions however large the project is.

A job reads its configuration from the environment (Settings) like the server, so the worker and the server
agree on MODEL_DIR, REDIS_URL and LABEL_STUDIO_URL. A worker killed at any point leaves the previous version
serving: promotion is the registry's atomic rename, and the project's model_version moves only after every
chunk has been written.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import torch
from label_studio_sdk.core.api_error import ApiError
from rq import Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from transformers import TrainerCallback

from ..errors import BackendError
from ..labelstudio.client import LabeledTask, LabelStudioClient
from ..labelstudio.label_config import LabelConfig, parse_label_config
from ..labelstudio.project_setup import SUSPECT_KEY, not_connected
from ..models.base import label_shortfall
from ..models.loader import load_version
from ..models.training import train_version
from ..models.transformer import TransformerClassifier
from ..predictions import in_config_order, window
from ..registry import DEFAULT_SCOPE, Registry, Superseded, Version, scope_of
from ..settings import FAST_KINDS, Settings
from ..stopping import StopSignal
from ..suspects import out_of_fold_probabilities, suspect_scores
from .policy import FAST, FULL, SCORING_PREFIX, RetrainPolicy, connect, enqueue_once
from .pool import Pool, PoolStore, SyncReport

log = logging.getLogger(__name__)

# A task's suspect score is rewritten when it moves by this much (or crosses 0.5): fewer writes, same ranking.
SUSPECT_STEP = 0.05
# A chunk job that fails (Label Studio down past the client's own retries, a worker killed) is queued again this
# many times, then counts as failed; the switch runs either way (finish_rescoring). At once: the worker that
# failed may be gone, and another takes it.
CHUNK_RETRIES = 2
# The id of a cleanup job, before `<project>-<version>` (the switch's).
CLEANUP_PREFIX = "cleanup-"
# The id of a project's suspect-score job, before `<project>-<random>`: at most one waits per project.
SUSPECTS_PREFIX = "suspects-"
# A suspects job that finds another training run of its project due leaves the scores to that run's own job
# (their out-of-fold models take seconds that the run would wait for), unless they are older than this: under
# annotations that keep the queue busy they are still rewritten every few minutes. Under 20 annotators (make load)
# a whole job took 30-33 s, most of it Label Studio answering slowly: with a minute here it took half the worker's
# time and the labels waited for it (docs/benchmarks.md).
SUSPECTS_MAX_AGE_SECONDS = 300


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
    # The project's tasks as the worker holds them, brought up to date (only what changed is read), and the
    # annotated ones (as many as the labels): the unlabeled pool is the rest.
    pool, synced = sync_pool(settings, RetrainPolicy.from_settings(settings, queue.connection), client, project, config)
    labeled, annotated = client.annotated(project, config)
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
    unlabeled = pool.without(annotated)
    # Tasks imported from now on, or not read yet, are newer than every task this run scores: score_new_tasks
    # takes them.
    through = pool.through
    if synced.more:
        enqueue_once(queue, SCORING_PREFIX, score_new_tasks, project, "score new tasks")
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
            unlabeled=unlabeled,
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
        "pool": {"unlabeled": len(unlabeled), **synced.as_dict()},
    }
    if outcome.version is not None:
        version = outcome.version
        result["version"] = version.name
        result["pruned"] = registry.prune(scope, keep=settings.keep_versions)
        _log_progress(project, version, settings.stop_rule.judge(registry.history(scope)))
        if version.kind in FAST_KINDS:
            result["rescored"] = rescore_now(project, version.name, settings, xml=xml, pool=unlabeled, through=through)
        else:
            result["rescoring_chunks"] = enqueue_rescoring(
                project, version.name, settings, queue, xml=xml, tasks=_pairs(unlabeled), through=through
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
            result["rescored"] = rescore_now(project, serving.name, settings, xml=xml, pool=unlabeled, through=through)
        else:
            result["rescoring_chunks"] = enqueue_rescoring(
                project, serving.name, settings, queue, xml=xml, tasks=_pairs(unlabeled), through=through
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
    """Tasks imported into Label Studio since the serving version's round (ids past the one it recorded) join the
    pool, and the QUEUE_WINDOW most uncertain of them are written: Label Studio 1.23 asks a backend for a prediction
    only when an annotator opens a task, and its uncertainty sampling takes only tasks with a prediction of the
    project's model_version, so until the next round such tweets would be neither in the queue nor in the score
    order. Written beside the round's window, they take their place in it by score."""
    settings = _settings()
    client = LabelStudioClient.from_settings(settings)
    registry = Registry(settings.model_dir)
    problem = not_connected(client, project, registry.instance)
    if problem:
        log.warning("project %s: new tasks not scored: %s", project, problem)
        return {"status": "not_connected", "reason": problem}
    xml = client.label_config(project)
    policy = RetrainPolicy.from_settings(settings, _queue(settings).connection)
    held_through = PoolStore.of(settings, project).read().through
    pool, synced = sync_pool(settings, policy, client, project, parse_label_config(xml))
    serving = registry.resolve(project)
    if serving is None:
        return {"status": "no_model", "pool": synced.as_dict()}  # cold start: the first training scores every task
    # Redis lost the mark: the tasks the pool held before were scored by the round or the job that read them.
    new = pool.after(policy.scored_through(project) or held_through)
    if len(new):
        new = new.without(client.annotated_ids(project))  # imported with their annotations: labels, not queue
    scored = score_pool(project, serving.name, xml, new, settings)
    window = scored.get("window", [])
    if window:
        client.write_predictions(project, window)
        if not registry.ours(client.model_version(project)):
            # A project never switched by a round (new, its tasks just imported): its queue is this window.
            client.set_model_version(project, serving.name)
    policy.scored(project, pool.through)
    if synced.more:  # a large import: the next batch in a job of its own, after what waits in the queue
        enqueue_once(policy.queue, SCORING_PREFIX, score_new_tasks, project, "score new tasks")
    result = {
        "status": "written" if len(new) else "nothing_new",
        "version": serving.name,
        "tasks": len(new),
        "predictions": len(window),
        "pool": synced.as_dict(),
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
        pool, _ = sync_pool(settings, policy, client, project, config)
        labeled, annotated = client.annotated(project, config)
        unlabeled = pool.without(annotated)
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
    unlabeled: Pool,
    settings: Settings,
    give_way: Callable[[], dict | None] | None = None,
) -> dict:
    """Write `suspect_score` into the data of annotated tasks the out-of-fold model doubts (score > 0.5), and
    update it where it moved by SUSPECT_STEP or crossed 0.5, so the "Possibly mislabeled" tab follows the labels
    with few writes. A failure is logged, never fatal. `give_way`, asked before each write (one request each,
    seconds in all): an answer stops the writes there, and is the result."""
    started = time.time()
    texts, labels = [t.text for t in labeled], [t.label for t in labeled]
    probs = out_of_fold_probabilities(texts, labels, classes, settings=settings, unlabeled=unlabeled)
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
    tasks: list[list] | None = None,
    through: int = 0,
) -> int:
    """Split the unlabeled tasks ([id, text] pairs; the project's pool less its annotated tasks unless given) into
    chunk jobs and a final job that runs when all of them have ended and writes their window. Nothing when a
    re-scoring with `version` is still pending (a second rollback to it, a run that finds Label Studio not switched
    yet): the same predictions twice would be two rows each. `through`: the newest task id the round saw
    (score_new_tasks takes the ones after it)."""
    if switch_pending(queue, project, version):
        log.info("project %s: a re-scoring with %s is already under way", project, version)
        return 0
    if xml is None or tasks is None:
        client = LabelStudioClient.from_settings(settings)
        xml = xml or client.label_config(project)
        policy = RetrainPolicy.from_settings(settings, queue.connection)
        pool, _ = sync_pool(settings, policy, client, project, parse_label_config(xml))
        tasks, through = _pairs(pool.without(client.annotated_ids(project))), pool.through
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
                "tasks": part,
            },
        )
        for part in (tasks[i : i + size] for i in range(0, len(tasks), size))
    ]
    queue.enqueue_call(
        finish_rescoring,
        kwargs={"project": project, "version": version, "through": through},
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


def rescore_now(project: int, version: str, settings: Settings, *, xml: str, pool: Pool, through: int = 0) -> dict:
    """A fast kind's re-scoring, inside the training job: the unlabeled pool scored (a linear version: one sparse
    product over its cached rows), then what the final job does, without the job hand-offs."""
    scored = score_pool(project, version, xml, pool, settings)
    switch_started = time.time()
    final = finish_rescoring(project, version, window=scored.get("window", []), through=through)
    return {
        "scored": scored.get("scored", 0),
        "predictions": final.get("predictions", 0),
        "score_seconds": scored.get("seconds", 0),
        "write_seconds": final.get("write_seconds", 0),
        "switch": final["status"],
        "switch_seconds": round(time.time() - switch_started, 2),
    }


def most_uncertain(predictions: list[dict], size: int) -> list[dict]:
    """The `size` predictions with the lowest score (ascending: the most uncertain first)."""
    order = np.argsort([p["score"] for p in predictions], kind="stable")[:size]
    return [predictions[i] for i in order]


def score_pool(project: int, version: str, label_config: str, pool: Pool, settings: Settings) -> dict:
    """score_chunk for a pool (a linear version under its vocabulary: one sparse product)."""
    return _window_of(project, version, label_config, settings, pool.ids, pool.probabilities)


def score_chunk(project: int, version: str, label_config: str, tasks: list[list]) -> dict:
    """The QUEUE_WINDOW most uncertain of [task id, text] pairs under `version` (the window is never wider,
    whatever the other chunks hold), and how many it scored; only the window's predictions are built."""
    ids, texts = np.array([i for i, _ in tasks], dtype=np.int64), [text for _, text in tasks]
    return _window_of(project, version, label_config, _settings(), ids, lambda c: c.predict_proba(texts))


def _window_of(
    project: int,
    version: str,
    label_config: str,
    settings: Settings,
    ids: np.ndarray,
    probabilities: Callable[[Any], np.ndarray],
) -> dict:
    serving = _serving(project, version, settings)
    if serving is None:
        return {"status": "superseded", "version": version}
    started = time.time()
    config = parse_label_config(label_config)
    classifier = load_version(serving, settings)
    _progress(stage="scoring", version=version, tasks=len(ids))
    if not classifier.serves(config.classes) or not len(ids):
        return {"status": "scored", "version": version, "scored": 0, "window": [], "seconds": 0.0}
    probs = in_config_order(classifier, config, probabilities(classifier))
    return {
        "status": "scored",
        "version": version,
        "scored": len(ids),
        "window": window(ids, probs, config, settings.uncertainty, classifier.version, settings.queue_window),
        "seconds": round(time.time() - started, 2),
    }


def sync_pool(
    settings: Settings, policy: RetrainPolicy, client: LabelStudioClient, project: int, config: LabelConfig
) -> tuple[Pool, SyncReport]:
    """The project's pool synced, the tasks Label Studio said it deleted (TASKS_DELETED) dropped first."""
    deleted = policy.deleted_ids(project)
    synced = PoolStore.of(settings, project).sync(client, config, deleted=deleted)
    policy.forget_deleted(project, deleted)
    return synced


def _pairs(pool: Pool) -> list[list]:
    """[id, text] of each task of `pool`: what a chunk job takes."""
    return [[int(i), text] for i, text in zip(pool.ids, pool.texts(), strict=True)]


def finish_rescoring(
    project: int, version: str, failed_chunks: int = 0, window: list[dict] | None = None, through: int = 0
) -> dict:
    """The window (the QUEUE_WINDOW most uncertain predictions of `window`, or of the chunk jobs this job follows)
    written, then the project switched to `version` and a cleanup queued; `through` recorded for score_new_tasks."""
    settings = _settings()
    job = get_current_job()
    if window is None:
        window = []
        # The chunk jobs this job follows: the windows of those that finished, a count of those that failed after
        # their retries (a killed worker's too, once RQ notices).
        for chunk in job.fetch_dependencies() if job is not None and job.dependency_ids else []:
            if chunk.get_status() == JobStatus.FINISHED:
                window += (chunk.return_value() or {}).get("window", [])
            else:
                failed_chunks += 1
    _progress(stage="switching", version=version, failed_chunks=failed_chunks)
    client = LabelStudioClient.from_settings(settings)
    if _serving(project, version, settings) is None:
        # A newer version was promoted meanwhile; its own final job switches the project.
        return {"status": "superseded", "version": version}
    window = most_uncertain(window, settings.queue_window)
    started = time.time()
    if window:
        client.write_predictions(project, window)
    write_seconds = round(time.time() - started, 2)
    versions = client.model_versions(project)
    if not versions.get(version):
        # Label Studio refuses a model_version without predictions: a project with every task labeled has none.
        log.info("project %s: no unlabeled task to score; its model_version stays as it is", project)
        _progress(stage="done", version=version, scored=0)
        return {"status": "nothing to score", "version": version}
    client.set_model_version(project, version)
    RetrainPolicy.from_settings(settings, _queue(settings).connection).scored(project, through)
    if failed_chunks:
        log.error(
            "project %s: switched to %s, but %d re-scoring chunk(s) failed (rq-dashboard's failed jobs say why): "
            "its window holds the most uncertain tasks of the other chunks",
            project,
            version,
            failed_chunks,
        )
    cleanup = _enqueue_cleanup(settings, project, version)
    _progress(stage="done", version=version, cleanup=cleanup.id, failed_chunks=failed_chunks)
    return {
        "status": "switched",
        "version": version,
        "predictions": len(window),
        "write_seconds": write_seconds,
        "failed_chunks": failed_chunks,
        "cleanup": cleanup.id,
    }


def _queue(settings: Settings) -> Queue:
    job = get_current_job()
    return Queue(settings.rq_queue, connection=job.connection if job is not None else connect(settings))


def _enqueue_cleanup(settings: Settings, project: int, version: str) -> Job:
    return _queue(settings).enqueue(
        delete_old_predictions,
        kwargs={"project": project, "version": version},
        job_id=f"{CLEANUP_PREFIX}{project}-{version}",
        job_timeout=settings.train_timeout,
        description=f"delete older predictions of project {project} than {version}",
    )


def delete_old_predictions(project: int, version: str) -> dict:
    """Delete the predictions of our versions other than `version`, oldest first, while the project is on
    `version` (after a newer switch, that switch's own cleanup does it). Each is a window (and the tasks annotators
    opened outside it, which Label Studio had predicted on the spot): a few seconds of Label Studio's time, so it
    runs right after the switch, in a job of its own so that the run that switched is done."""
    settings = _settings()
    client = LabelStudioClient.from_settings(settings)
    if client.model_version(project) != version:
        return {"status": "superseded", "version": version, "deleted_versions": []}
    # Only ours: the names with this MODEL_DIR's instance id.
    registry = Registry(settings.model_dir)
    # Label Studio lists the newest first.
    old = [name for name in client.model_versions(project) if name != version and registry.ours(name)][::-1]
    deleted = _delete(client, project, old, settings)
    _progress(stage="deleted", version=version, deleted_versions=deleted)
    return {"status": "done", "version": version, "deleted_versions": deleted}


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
