"""When to retrain: counting annotation events and coalescing training runs, per project and tier, in Redis.

Two tiers of runs (settings.MODEL_KINDS): a "fast" run trains the fast kinds (seconds) every RETRAIN_EVERY
annotation events; a "full" run trains every kind, the transformer included (minutes), every TRANSFORMER_EVERY
events and on Start Training (with only the transformer, full runs come every RETRAIN_EVERY events). The tiers
are independent, so a transformer still training never holds back a fast run of the same project.

Per project and tier at most one training run is queued and one runs. Requests that arrive while one is queued join
it (the run reads every label when it starts); requests that arrive while one runs set a flag, and the run
enqueues exactly one follow-up when it ends. The state changes are Lua scripts, atomic across every server
process and worker:

    al:<project>:<tier>:new      annotation events since the last training request
    al:<project>:<tier>:queued   "<job id> <unix time>" of the queued training job
    al:<project>:<tier>:running  id of the running job; a lease the job renews, so a killed worker frees it
    al:<project>:<tier>:rerun    set when a request arrived during the run
    al:<project>:suspects        unix time the project's suspect scores were last written (jobs.refresh_suspects)
    al:<project>:scored-through  the newest task id a round (or jobs.score_new_tasks) has scored: tasks imported
                                 later have ids past it
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.retry import Retry
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from ..errors import BackendError
from ..settings import Settings, redact

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}
TRAIN_ACTION = "START_TRAINING"
# Tasks imported into Label Studio: scored by the serving version at once (jobs.score_new_tasks), no training.
IMPORT_ACTION = "TASKS_CREATED"
SCORE_FUNC = "backend.retraining.jobs.score_new_tasks"
# Tasks deleted in Label Studio: their ids wait in Redis for the next sync of the project's pool, which then drops
# them without listing the project's ids (its task count still checks the pool: a forged event costs a listing).
DELETE_ACTION = "TASKS_DELETED"
MAX_DELETED_IDS = 100_000
# The id of a project's job that scores newly imported tasks, before `<project>-<random>`: at most one waits.
SCORING_PREFIX = "score-"
TRAIN_FUNC = "backend.retraining.jobs.train_project"
FAST, FULL = "fast", "full"


class Decision(enum.StrEnum):
    IGNORED = "ignored"  # not an event that changes labels
    COUNTED = "counted"  # counted; not enough new annotations to retrain yet
    QUEUED = "queued"  # a training job was enqueued
    JOINED = "joined"  # a training job is already queued and will see these labels
    FOLLOW_UP = "follow_up"  # a run is in progress; one follow-up run will start after it


# What an event's decisions add up to: the most consequential of the tiers' decisions.
_RANK = {Decision.IGNORED: 0, Decision.COUNTED: 1, Decision.JOINED: 2, Decision.FOLLOW_UP: 3, Decision.QUEUED: 4}


def enqueue_once(queue: Queue, prefix: str, func: Any, project: int, what: str) -> tuple[str, bool]:
    """Queue `func(project=project)` unless a job of the same kind waits for the project already: such a job reads
    Label Studio when it starts, so it sees what a second one would. (job id, whether it is new)."""
    prefix = f"{prefix}{project}-"
    waiting = [job_id for job_id in queue.get_job_ids() if job_id.startswith(prefix)]
    if waiting:
        return waiting[0], False
    job_id = f"{prefix}{uuid.uuid4().hex[:12]}"
    queue.enqueue_call(func, kwargs={"project": project}, job_id=job_id, description=f"{what} of project {project}")
    return job_id, True


def _keys(project: int, tier: str) -> dict[str, str]:
    return {name: f"al:{project}:{tier}:{name}" for name in ("new", "queued", "running", "rerun")}


def _suspects_key(project: int) -> str:
    return f"al:{project}:suspects"


def _deleted_key(project: int) -> str:
    return f"al:{project}:deleted"


def _scored_key(project: int) -> str:
    return f"al:{project}:scored-through"


def cadence(settings: Settings) -> dict[str, int]:
    """{tier: annotation events between its runs} for the configured MODEL_KINDS."""
    if not settings.fast_kinds:
        return {FULL: settings.retrain_every}
    if len(settings.fast_kinds) == len(settings.kinds):
        return {FAST: settings.retrain_every}
    return {FAST: settings.retrain_every, FULL: settings.transformer_every}


# Every key expires: a project no one annotates any more (or ids no project has) leaves nothing behind.
KEY_TTL_SECONDS = 7 * 24 * 3600
# KEYS: new; ARGV: count, threshold, ttl -> 1 when the threshold is reached (and the counter restarts)
_COUNT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n >= tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]); return 1 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 0
"""
# KEYS: queued, running, rerun, new; ARGV: "<job id> <time>", ttl
_REQUEST = """
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('SET', KEYS[3], '1', 'EX', ARGV[2]); return 'follow_up' end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 'queued' end
return redis.call('GET', KEYS[1])
"""
# The winner of a request enqueues right after its SET; until then its job is not in RQ yet.
ENQUEUE_GRACE_SECONDS = 30
# KEYS: queued, running, rerun; ARGV: job id, lease ms, ttl -> 1 when this job may run
_BEGIN = """
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('SET', KEYS[3], '1', 'EX', ARGV[3]); return 0 end
local queued = redis.call('GET', KEYS[1])
if queued and string.sub(queued, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: queued; ARGV: the value seen -> deletes it only if nobody replaced it meanwhile
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: scored-through; ARGV: task id, ttl -> never moves back (a round that read Label Studio before an import
# may end after the import was scored)
_SCORED = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
"""
# KEYS: running; ARGV: job id, lease ms -> 1 while this job still holds the lease
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1 end
return 0
"""
# KEYS: running, rerun; ARGV: job id -> 1 when a follow-up run is due
_END = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('DEL', KEYS[2])
"""


class RetrainPolicy:
    """The retraining policy over one Redis connection and one RQ queue."""

    def __init__(
        self, queue: Queue, *, cadence: dict[str, int] | None = None, lease_seconds: float = 60, job_timeout: int = 3600
    ):
        self.queue = queue
        self.redis: Redis = queue.connection
        self.cadence = cadence or {FAST: 10}
        # Start Training asks for the most thorough tier there is.
        self.on_demand = FULL if FULL in self.cadence else FAST
        self.lease_ms = int(lease_seconds * 1000)
        self.job_timeout = job_timeout
        self._count = self.redis.register_script(_COUNT)
        self._request = self.redis.register_script(_REQUEST)
        self._begin = self.redis.register_script(_BEGIN)
        self._renew = self.redis.register_script(_RENEW)
        self._end = self.redis.register_script(_END)
        self._forget = self.redis.register_script(_FORGET)
        self._scored = self.redis.register_script(_SCORED)

    @classmethod
    def from_settings(cls, settings: Settings, connection: Redis | None = None) -> RetrainPolicy:
        queue = Queue(settings.rq_queue, connection=connection or connect(settings))
        return cls(
            queue,
            cadence=cadence(settings),
            lease_seconds=settings.training_lease_seconds,
            job_timeout=settings.train_timeout,
        )

    def on_event(
        self, project: int, action: str, count: int = 1, task_ids: list[int] | None = None
    ) -> tuple[Decision, str | None]:
        """Count annotation events per tier and request a tier's run when its count is reached, or the most
        thorough tier at once on START_TRAINING; keep the ids of deleted tasks (`task_ids`) for the pool. Returns
        the most consequential decision and its job id."""
        if action == DELETE_ACTION:
            self.deleted(project, task_ids or [])
            return Decision.COUNTED, None
        if action == TRAIN_ACTION:
            return self.request(project, self.on_demand)
        if action == IMPORT_ACTION:
            job_id, new = enqueue_once(self.queue, SCORING_PREFIX, SCORE_FUNC, project, "score new tasks")
            return (Decision.QUEUED if new else Decision.JOINED), job_id
        if action not in ANNOTATION_ACTIONS:
            return Decision.IGNORED, None
        decisions = []
        for tier, every in self.cadence.items():
            if self._count(keys=[_keys(project, tier)["new"]], args=[max(count, 1), every, KEY_TTL_SECONDS]):
                decisions.append(self.request(project, tier))
            else:
                decisions.append((Decision.COUNTED, None))
        return max(decisions, key=lambda d: _RANK[d[0]])

    def request(self, project: int, tier: str = FAST) -> tuple[Decision, str | None]:
        """Ask for a training run; returns the decision and the id of the job that will see the labels."""
        k = _keys(project, tier)
        job_id = f"train-{project}-{tier}-{uuid.uuid4().hex[:12]}"
        answer = self._request(
            keys=[k["queued"], k["running"], k["rerun"], k["new"]], args=[f"{job_id} {time.time()}", KEY_TTL_SECONDS]
        )
        answer = answer.decode() if isinstance(answer, bytes) else answer
        if answer == "follow_up":
            return Decision.FOLLOW_UP, None
        if answer == "queued":
            self._enqueue(project, tier, job_id)
            return Decision.QUEUED, job_id
        queued_id, _, since = answer.partition(" ")
        # Checking RQ costs a job fetch; a job queued moments ago is trusted (webhooks come in bursts).
        if time.time() - float(since or 0) < ENQUEUE_GRACE_SECONDS or self._alive(queued_id):
            return Decision.JOINED, queued_id
        # The queued job was lost (enqueue failed half-way, queue emptied, job expired): replace it.
        log.warning("project %s: queued training job %s is gone; enqueuing a new one", project, queued_id)
        self._forget(keys=[k["queued"]], args=[answer])
        return self.request(project, tier)

    def _alive(self, job_id: str) -> bool:
        try:
            status = Job.fetch(job_id, connection=self.redis).get_status()
        except NoSuchJobError:
            return False
        return status in (JobStatus.QUEUED, JobStatus.CREATED, JobStatus.DEFERRED)

    def _enqueue(self, project: int, tier: str, job_id: str) -> Job:
        return self.queue.enqueue(
            TRAIN_FUNC,
            kwargs={"project": project, "tier": tier},
            job_id=job_id,
            job_timeout=self.job_timeout,
            description=f"train project {project} ({tier})",
            result_ttl=7 * 24 * 3600,
            failure_ttl=7 * 24 * 3600,
        )

    @contextmanager
    def run(self, project: int, job_id: str, tier: str = FAST) -> Iterator[bool]:
        """Hold the project's training lease of `tier` for the block (yields False when another run holds it)."""
        k = _keys(project, tier)
        if not self._begin(keys=[k["queued"], k["running"], k["rerun"]], args=[job_id, self.lease_ms, KEY_TTL_SECONDS]):
            yield False
            return
        stop = threading.Event()

        def renew():
            while not stop.wait(self.lease_ms / 3000):
                try:
                    if not self._renew(keys=[k["running"]], args=[job_id, self.lease_ms]):
                        log.warning("project %s: training lease of %s was lost", project, job_id)
                except Exception:  # Redis blinked: the next renewal tries again before the lease ends
                    log.exception("renewing the training lease")

        renewer = threading.Thread(target=renew, daemon=True, name=f"lease-{project}")
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join()
            if self._end(keys=[k["running"], k["rerun"]], args=[job_id]):
                decision, follow_up = self.request(project, tier)
                log.info("project %s: labels arrived during the run: %s %s", project, decision.value, follow_up or "")

    def run_due(self, project: int) -> bool:
        """Whether a training run of `project` (any tier) is queued, or due after the one in progress."""
        return any(state["queued"] or state["rerun"] for state in (self.state(project, t) for t in self.cadence))

    def deleted(self, project: int, task_ids: list[int]) -> None:
        """Label Studio deleted these tasks (TASKS_DELETED): kept for the pool's next sync, at most MAX_DELETED_IDS."""
        key = _deleted_key(project)
        room = MAX_DELETED_IDS - int(self.redis.scard(key))
        if task_ids and room > 0:
            self.redis.sadd(key, *task_ids[:room])
            self.redis.expire(key, KEY_TTL_SECONDS)

    def deleted_ids(self, project: int) -> set[int]:
        return {int(i) for i in self.redis.smembers(_deleted_key(project))}

    def forget_deleted(self, project: int, task_ids: set[int]) -> None:
        """The pool has dropped these."""
        if task_ids:
            self.redis.srem(_deleted_key(project), *task_ids)

    def scored(self, project: int, task_id: int) -> None:
        """Tasks up to `task_id` were scored by a round or an import's job."""
        self._scored(keys=[_scored_key(project)], args=[int(task_id), KEY_TTL_SECONDS])

    def scored_through(self, project: int) -> int:
        """The newest task id scored; 0 when none is known (Redis lost it: every task without a prediction)."""
        value = self.redis.get(_scored_key(project))
        return int(value) if value else 0

    def suspects_written(self, project: int) -> None:
        self.redis.set(_suspects_key(project), time.time(), ex=KEY_TTL_SECONDS)

    def suspects_age(self, project: int) -> float | None:
        """Seconds since the project's suspect scores were last written; None when never (or a week ago)."""
        written = self.redis.get(_suspects_key(project))
        return None if written is None else max(time.time() - float(written), 0.0)

    def state(self, project: int, tier: str = FAST) -> dict:
        k = _keys(project, tier)
        raw: list[bytes | None] = self.redis.mget([k["new"], k["queued"], k["running"], k["rerun"]])  # type: ignore[assignment]
        values = [v.decode() if v else None for v in raw]
        values[1] = values[1] and values[1].split(" ")[0]  # "<job id> <unix time>"
        return dict(zip(("new", "queued", "running", "rerun"), values, strict=True))


def connect(settings: Settings, *, fail_fast: bool = False) -> Redis:
    """A Redis connection; fail_fast for the webhook, which must answer Label Studio within 1 s."""
    if fail_fast:
        return Redis.from_url(
            settings.redis_url, socket_connect_timeout=0.3, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
    return Redis.from_url(settings.redis_url)


def check_credentials(settings: Settings) -> None:
    """Refuse to start (serve, worker) when Redis refuses REDIS_URL's password: that is a setting to fix, not an
    outage to wait out. A Redis that is down is: /webhook answers 503 until it is back."""
    try:
        connect(settings, fail_fast=True).ping()
    except AuthenticationError as exc:  # the server's words, which never contain the password
        url = redact(settings.redis_url)
        problem = (
            f"refused REDIS_URL's password ({str(exc).rstrip('.')})"
            if urlsplit(settings.redis_url).password is not None
            else "requires a password and REDIS_URL has none"
        )
        raise BackendError(
            f"Redis at {url} {problem}: REDIS_URL is redis://:PASSWORD@host:6379/0 (docker compose builds it "
            "from REDIS_PASSWORD)"
        ) from None
    except RedisError:
        pass
