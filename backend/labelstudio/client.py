"""Everything the retraining jobs ask of Label Studio, on one SDK generation (`label_studio_sdk.LabelStudio`).

Label Studio is the source of truth for labels: a job reads every annotated task from it, never from webhook
payloads, so a lost or forged webhook can delay training but never lose or inject a label.
Every call retries with exponential backoff on connection errors, 429 and 5xx, then raises
LabelStudioUnavailable; nothing is half-read, so a job never trains on a partial data set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import BackendError, LabelStudioUnavailable, UnknownProject
from ..text import valid_text
from .label_config import LabelConfig

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_SIZE = 1000
# What a training reads of an annotated task. Label Studio 1.23 applies `include` to the nested annotations too,
# so their fields are named in the same list (with "annotations" alone, each comes back as its id only).
LABELED_FIELDS = "id,data,annotations,result,was_cancelled,updated_at"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ApiError) and (exc.status_code or 0) in (429, 500, 502, 503, 504)


def _brief(exc: BaseException | None) -> str:
    """An error in one line: Label Studio's 5xx pages are kilobytes of HTML."""
    if isinstance(exc, ApiError):
        body = " ".join(str(exc.body).split())
        return f"status {exc.status_code}: {body[:200]}{'...' if len(body) > 200 else ''}"
    return str(exc)[:500]


def _filter(*conditions: tuple[str, str, int]) -> str:
    """A Data Manager query: every (counter column, operator, number) to hold."""
    items = [
        {"filter": f"filter:tasks:{column}", "operator": operator, "type": "Number", "value": value}
        for column, operator, value in conditions
    ]
    return json.dumps({"filters": {"conjunction": "and", "items": items}})


def as_dict(item: Any) -> dict:
    return item if isinstance(item, dict) else item.model_dump()


@dataclass
class Task:
    id: int
    text: str


@dataclass
class LabeledTask:
    id: int
    text: str
    label: str
    data: dict = field(default_factory=dict)  # the task's whole data, as Label Studio holds it


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, *, attempts: int = 5, backoff: float = 1.0, timeout: float = 60):
        if not api_key:
            raise BackendError("LABEL_STUDIO_API_KEY is not set: the retraining jobs cannot read annotations")
        self.url = url.rstrip("/")
        self.ls = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
        # LABEL_STUDIO_ATTEMPTS and _BACKOFF are the only retries: the SDK's own 2 (1 s, 2 s) multiplied them.
        self.ls._client_wrapper.httpx_client.base_max_retries = 0
        self._attempts, self._backoff, self.timeout = attempts, backoff, timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient:
        return cls(
            settings.label_studio_url,
            settings.api_key,
            attempts=settings.label_studio_attempts,
            backoff=settings.label_studio_backoff,
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        def log_retry(state):
            problem = _brief(state.outcome.exception())
            log.warning("Label Studio %s: %s (attempt %d), retrying", what, problem, state.attempt_number)

        try:
            retrying = Retrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=self._backoff, max=30),
                retry=retry_if_exception(_transient),
                before_sleep=log_retry,
            )
            return retrying(fn)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            state = f"answered {cause.status_code}" if isinstance(cause, ApiError) else "unreachable"
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} {state} for {what} after "
                f"{exc.last_attempt.attempt_number} attempts: {_brief(cause)}"
            ) from cause

    def _of_project(self, project: int, what: str, fn: Callable[[], T]) -> T:
        """_call, with Label Studio's 403 and 404 said as UnknownProject."""
        try:
            return self._call(what, fn)
        except ApiError as exc:
            if exc.status_code in (403, 404):
                raise UnknownProject(f"Label Studio at {self.url} has no project {project} this token reads") from exc
            raise

    def _project(self, project: int, fields: str, *, change: dict | None = None) -> dict:
        """The project's `fields` alone, after `change` when given: named in `include`, Label Studio computes none
        of the counters it otherwise adds to a project (seconds for one of 200,000 tasks on SQLite, against
        milliseconds; docs/benchmarks.md)."""

        def call() -> dict:
            answer = self.ls._client_wrapper.httpx_client.request(
                f"api/projects/{project}/", method="PATCH" if change else "GET", params={"include": fields}, json=change
            )
            if answer.status_code >= 400:
                raise ApiError(status_code=answer.status_code, headers=dict(answer.headers), body=answer.text)
            return answer.json()

        return self._of_project(project, "updating the project" if change else "reading the project", call)

    def label_config(self, project: int) -> str:
        """The project's label config XML (parse it with label_config.parse_label_config)."""
        return self._project(project, "id,label_config").get("label_config") or ""

    def _tasks(
        self, project: int, *, labeled: bool | None, include: str, unscored: bool = False, after: int = 0
    ) -> list[dict]:
        """`labeled`: annotated tasks only (True), unannotated only (False), every task (None)."""
        conditions = [] if labeled is None else [("total_annotations", "greater" if labeled else "equal", 0)]
        if unscored:
            conditions.append(("total_predictions", "equal", 0))
        if after:
            conditions.append(("id", "greater", after))
        query = _filter(*conditions) if conditions else None
        # Only the fields named in `include`: Label Studio otherwise also sends the counters and aggregates of its
        # Data Manager's columns for every task, and reading is 3-4x slower (docs/benchmarks.md). The annotations
        # come only with fields="all", whatever `include` says.
        fields: Any = "all" if "annotations" in include else "task_only"

        def read_all() -> list[dict]:
            pager: Iterable[Any] = self.ls.tasks.list(
                project=project, fields=fields, include=include, page_size=PAGE_SIZE, query=query
            )
            return [as_dict(task) for task in pager]  # items, not pages: iter_pages() raises after the last

        return self._call("listing tasks", read_all)

    def labeled_tasks(self, project: int, config: LabelConfig) -> list[LabeledTask]:
        """Every annotated task with a label: its newest annotation that was not skipped."""
        return self.annotated(project, config)[0]

    def annotated(self, project: int, config: LabelConfig) -> tuple[list[LabeledTask], set[int]]:
        """(labeled_tasks, the ids of every annotated task; a task whose annotations were all skipped is not one)."""
        found, ids = [], set()
        for task in self._tasks(project, labeled=True, include=LABELED_FIELDS):
            ids.add(task["id"])
            label = latest_choice(task.get("annotations") or [], config)
            text = config.text_of(task, max_chars=10**9)
            if label is not None and text is not None:
                found.append(LabeledTask(task["id"], text, label, task["data"]))
        return found, ids

    def labeled(self, project: int, config: LabelConfig) -> tuple[list[str], list[str]]:
        """(texts, labels) of every annotated task, as labeled_tasks reads them."""
        tasks = self.labeled_tasks(project, config)
        return [t.text for t in tasks], [t.label for t in tasks]

    def unlabeled(self, project: int, config: LabelConfig, *, unscored: bool = False, after: int = 0) -> list[Task]:
        """The tasks without annotations; `unscored`: of those, the ones without any prediction; `after`: of
        those, the ones whose id is greater (imported later: Label Studio numbers tasks in order)."""
        tasks = self._tasks(project, labeled=False, include="id,data", unscored=unscored, after=after)
        return [Task(t["id"], valid_text(t["data"][config.data_key])) for t in tasks if _has_text(t, config)]

    def tasks(
        self, project: int, config: LabelConfig, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, str | None]]:
        """(id, text) of the tasks, annotated or not, whose id is greater than `after`, in id order, at most `limit`;
        text None where the task has no text in the config's field. Read a page at a time by id (each page asks for
        the ids past the last one read), so a long read costs the same per page from the first to the last."""
        found: list[tuple[int, str | None]] = []
        while limit is None or len(found) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
            query = json.dumps({**json.loads(_filter(("id", "greater", after))), "ordering": ["tasks:id"]})

            def page(query: str = query, size: int = size) -> list[dict]:
                answer: Any = self.ls.tasks.list(
                    project=project, fields="task_only", include="id,data", page_size=size, query=query
                )
                return [as_dict(task) for task in (answer.items or [])]

            tasks = self._call("listing tasks", page)
            found += [
                (t["id"], valid_text(t["data"][config.data_key]) if _has_text(t, config) else None) for t in tasks
            ]
            if len(tasks) < size:
                break
            after = max(t["id"] for t in tasks)
        return found

    def task_ids(self, project: int) -> list[int]:
        """The id of every task of the project."""
        return [t["id"] for t in self._tasks(project, labeled=None, include="id")]

    def annotated_ids(self, project: int) -> set[int]:
        """The ids of the annotated tasks (as `annotated` counts them): the id alone, as many as the labels."""
        return {t["id"] for t in self._tasks(project, labeled=True, include="id")}

    def task_count(self, project: int) -> int:
        """How many tasks the project holds (one request, whatever its size)."""
        return int(self._project(project, "id,task_number").get("task_number") or 0)

    def write_predictions(self, project: int, predictions: list[dict]) -> None:
        """One bulk call per chunk; Label Studio's import endpoint batches inside."""
        # The SDK types `request` as its pydantic models; it sends plain dicts of the same shape as they are.
        request: Any = predictions
        self._call("writing predictions", lambda: self.ls.projects.import_predictions(id=project, request=request))

    def update_task_data(self, task: int, data: dict) -> None:
        """Replace a task's data (Label Studio replaces it whole: pass every key, changed or not)."""
        self._call("updating a task", lambda: self.ls.tasks.update(id=str(task), data=data))

    def model_version(self, project: int) -> str:
        """The project's model_version: the version whose predictions Label Studio orders the queue by."""
        return self._project(project, "id,model_version").get("model_version") or ""

    def set_model_version(self, project: int, version: str) -> None:
        self._project(project, "id,model_version", change={"model_version": version})

    def model_versions(self, project: int) -> dict[str, int]:
        return self._call("listing model versions", lambda: model_version_counts(self.ls, project))

    def ml_backend_urls(self, project: int) -> list[str]:
        """The URLs of the ML backends connected to the project."""
        return self._of_project(
            project, "listing ML backends", lambda: [m.url for m in self.ls.ml.list(project=project) if m.url]
        )

    def delete_predictions(self, project: int, version: str, *, timeout: float | None = None) -> None:
        """`timeout`: Label Studio deletes about 100 predictions a second (docs/benchmarks.md), so a version of
        20,000 takes minutes; a retry sent while the first request still runs is refused (500)."""

        def delete():
            answer = self.ls._client_wrapper.httpx_client.request(
                f"api/projects/{project}/model-versions/",
                method="DELETE",
                json={"model_version": version},
                request_options={"timeout": timeout or self.timeout},
            )
            answer.raise_for_status()

        self._call(f"deleting predictions of {version}", delete)


def _has_text(task: dict, config: LabelConfig) -> bool:
    return isinstance(task.get("data"), dict) and isinstance(task["data"].get(config.data_key), str)


def model_version_counts(ls: LabelStudio, project: int) -> dict[str, int]:
    """{model_version: number of predictions} in the project (no SDK method for it)."""
    answer = ls._client_wrapper.httpx_client.request(f"api/projects/{project}/model-versions/", method="GET")
    answer.raise_for_status()
    return answer.json()


def latest_choice(annotations: Iterable[Any], config: LabelConfig) -> str | None:
    """The class chosen in the newest annotation that was not skipped, or None (even when an older one chose)."""
    usable = [a for a in map(as_dict, annotations) if not a.get("was_cancelled")]
    if not usable:
        return None
    newest = max(usable, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
    return config.choice_in(newest.get("result") or [])
