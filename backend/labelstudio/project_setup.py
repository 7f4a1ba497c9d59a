"""A Label Studio project ready for the loop, created or brought up to date; running it again duplicates nothing.

Project by title, label config, tweets from a CSV (`id,text`, the notebook's `activelearning.csv`; an optional
`label` column becomes annotations, to bootstrap the first model), the ML backend connected, Uncertainty
sampling, the Data Manager tabs "Most uncertain first", "Uncertain (margin <= T)" and "Possibly mislabeled",
the tweets scored by the backend's worker (the backend is connected before the import, and Label Studio tells its
webhook of the new tasks: the worker writes the window of them and sets the project's model_version, else
uncertainty sampling silently falls back to random), or, when the backend does not accept that webhook, predictions
retrieved for every task.

The tabs show the task id, the score, the predicted label and the tweet, and hide the rest. Label Studio 1.23
offers no column order to set through its API (a drag in the header is kept in the browser only) and lists the
task's data after its other columns, so hiding them is what brings the tweet on screen (docs/report.md).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from ..errors import UnknownProject
from ..models.loader import UNTRAINED
from ..tables import class_of
from .client import LabelStudioClient, as_dict, model_version_counts
from .label_config import parse_label_config

log = logging.getLogger(__name__)

# How long setup waits for the worker's window of the tweets it imported before it reports the model_version (a
# few seconds for thousands of tweets; the worker sets it in any case).
WORKER_WAIT_SECONDS = 60

WEBHOOK_HEADER = "X-Webhook-Secret"
# The user name of the ML connection's basic auth when the backend has none of its own: the password is then the
# webhook secret, which is how "Start Training" (sent through that connection) authenticates to /webhook.
WEBHOOK_USER = "label-studio"
SOURCE_ID = "tweet_id"  # the CSV's id, kept in the task's data: how a second run knows what is imported
MOST_UNCERTAIN = "Most uncertain first"
POSSIBLY_MISLABELED = "Possibly mislabeled"
# Written by the worker into the data of annotated tasks whose label an out-of-fold model doubts (suspects.py):
# the only per-task number Label Studio 1.23's Data Manager filters and sorts on that a backend can set.
SUSPECT_KEY = "suspect_score"

# Every column of a task in Label Studio 1.23's Data Manager but its data, in the order it shows them.
TASK_COLUMNS = (
    "id",
    "inner_id",
    "completed_at",
    "total_annotations",
    "cancelled_annotations",
    "total_predictions",
    "annotators",
    "annotations_results",
    "annotations_ids",
    "predictions_score",
    "predictions_model_versions",
    "predictions_results",
    "file_upload",
    "storage_filename",
    "created_at",
    "updated_at",
    "updated_by",
    "avg_lead_time",
    "draft_exists",
)


def uncertain_tab(threshold: float) -> str:
    return f"Uncertain (margin <= {threshold:g})"


@dataclass
class SetupReport:
    project: int
    created: bool
    imported: int = 0
    annotated: int = 0
    already_there: int = 0
    # Labels of the CSV written to tasks that were there without any annotation: Label Studio lost them at the
    # import, or an earlier run was interrupted between import and annotation.
    labels_restored: int = 0
    backend_connected: bool = False
    tabs_created: list[str] = field(default_factory=list)
    tabs_updated: list[str] = field(default_factory=list)
    model_version: str | None = None
    training_requested: bool = False
    # The imported tweets are scored by the backend's worker (Label Studio sent it their TASKS_CREATED event).
    scored_by_worker: bool = False
    # Whether annotators see the model's guess pre-selected (Label Studio's show_collab_predictions).
    predictions_shown: bool = True


def _columns(data_key: str, shown: tuple[str, ...]) -> dict[str, Any]:
    """The tab settings that show the task id, the columns in `shown` and the tweet, nothing else, within a
    1,400-pixel screen; the labeling view's side list shows the tweet alone."""
    extra = [f"data.{SOURCE_ID}", f"data.{SUSPECT_KEY}"]  # data keys other than the tweet
    return {
        "hiddenColumns": {
            "explore": [f"tasks:{c}" for c in [*TASK_COLUMNS, *extra] if c not in ("id", *shown)],
            "labeling": [f"tasks:{c}" for c in [*TASK_COLUMNS, *extra]],
        },
        "columnsWidth": {
            "tasks:id": 70,
            "tasks:predictions_score": 130,
            "tasks:predictions_results": 230,
            "tasks:annotations_results": 230,
            f"tasks:data.{SUSPECT_KEY}": 120,
            f"tasks:data.{data_key}": 700,
        },
    }


def connect_backend(
    ls, project: int, backend_url: str, *, backend_auth: tuple | None = None, webhook_secret: str = ""
) -> bool:
    """Connect the backend to the project so that everything Label Studio sends it is authenticated; True when
    it connected now (a second call changes only what is out of date, and sends the connection's login again:
    Label Studio never shows its password to compare).

    Label Studio 1.23 sends annotation events through a webhook it creates when a backend is connected, unless
    one with the same URL exists: that webhook is created (or updated) here first, carrying the secret header.
    "Start Training" goes through the ML connection instead, which sends basic auth but no custom header: the
    connection carries the backend's basic auth, else WEBHOOK_USER with the secret as password (docs/security)."""
    hook_url = backend_url.rstrip("/") + "/webhook"
    headers = webhook_headers(backend_auth, webhook_secret)
    ours = _webhooks(ls, project, backend_url)
    for hook in ours:
        if (hook.get("headers") or {}) != headers:
            ls.webhooks.update(id=hook["id"], url=hook_url, headers=headers)
    if not ours and headers:
        ls.webhooks.create(project=project, url=hook_url, headers=headers, send_payload=True, send_for_all_actions=True)
    user, password = backend_auth or ((WEBHOOK_USER, webhook_secret) if webhook_secret else ("", ""))
    # With basic auth on, Label Studio must send it on every call, or /setup answers 401 and it disconnects.
    auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": password} if user else {}
    connections = [m for m in ls.ml.list(project=project) if m.url.rstrip("/") == backend_url.rstrip("/")]
    for connection in connections if auth else []:
        # A connection made before the backend had a login (a `make run` stack from before it made one), or with
        # an older password, would answer 401 from now on. Label Studio checks the URL and the project with it.
        ls.ml.update(id=connection.id, url=connection.url, project=project, **auth)
    if connections:
        return False
    ls.ml.create(project=project, url=backend_url, title="tweets active learning", **auth)
    return True


def _webhooks(ls, project: int, backend_url: str) -> list[dict]:
    """The project's webhooks that reach this backend's /webhook."""
    hook_url = backend_url.rstrip("/") + "/webhook"
    hooks = [as_dict(h) for h in ls.webhooks.list(project=str(project))]
    return [h for h in hooks if str(h.get("url", "")).rstrip("/") == hook_url and h.get("project") == project]


def _lets_in(hook: dict, project: int) -> bool:
    """Whether the backend accepts what this webhook sends (its headers: the secret of an earlier setup): an event
    that changes nothing, sent as Label Studio would send it."""
    try:
        answer = requests.post(
            hook["url"],
            json={"action": "PROJECT_UPDATED", "project": {"id": project}},
            headers=hook.get("headers") or {},
            timeout=10,
        )
    except requests.RequestException:
        return False
    if answer.status_code != 200:
        log.warning("project %s: the backend refuses its webhook (%s): %s", project, answer.status_code, answer.text)
    return answer.status_code == 200


def backend_instance(url: str, timeout: float = 5) -> str:
    """The instance id that the backend at `url` answers on /health (MODEL_DIR/INSTANCE), or what is there
    instead: how the worker (not_connected) and the smoke check tell this backend from another at any URL."""
    try:
        answer = requests.get(f"{url.rstrip('/')}/health", timeout=timeout)
        body = answer.json() if answer.ok else None
    except (requests.RequestException, ValueError) as exc:
        return f"unreachable ({type(exc).__name__})"
    found = body.get("instance") if isinstance(body, dict) else None
    return found if isinstance(found, str) and found else "another backend"


def not_connected(client: LabelStudioClient, project: int, instance: str) -> str | None:
    """Why `project` is not served by this backend, or None when one of its ML backends is this one: a backend
    whose /health answers with this instance id (URLs differ between Label Studio, the browser and the worker,
    so the id, not the URL, says who it is). The worker must reach the backend at the URL Label Studio uses."""
    try:
        urls = client.ml_backend_urls(project)
    except UnknownProject as exc:  # deleted since the event, or another Label Studio's project id
        return str(exc)
    if not urls:
        return f"Label Studio's project {project} has no ML backend connected"
    seen = []
    for url in urls:
        found = backend_instance(url)
        if found == instance:
            return None
        seen.append(f"{url} is {found}")
    return f"none of project {project}'s ML backends is this one (instance {instance}): " + "; ".join(seen)


def webhook_headers(backend_auth: tuple | None, webhook_secret: str) -> dict[str, str]:
    """What a webhook from Label Studio (or request_training) sends to be let in: the secret header, else the
    backend's basic auth; nothing when the backend has neither."""
    if webhook_secret:
        return {WEBHOOK_HEADER: webhook_secret}
    if backend_auth:
        token = base64.b64encode(f"{backend_auth[0]}:{backend_auth[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}


def wanted_tabs(data_key: str, threshold: float) -> dict[str, dict[str, Any]]:
    """setup-project's Data Manager tabs, by title."""
    score_columns = _columns(data_key, ("predictions_score", "predictions_results"))
    return {
        MOST_UNCERTAIN: {"ordering": ["tasks:predictions_score"], **score_columns},
        uncertain_tab(threshold): {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:predictions_score",
                        "operator": "less_or_equal",
                        "type": "Number",
                        "value": threshold,
                    }
                ],
            },
            "ordering": ["tasks:predictions_score"],
            **score_columns,
        },
        # Annotated tasks whose label the out-of-fold model doubts more than it believes (suspect_score > 0.5),
        # the most doubted first; empty until the worker has written a score.
        POSSIBLY_MISLABELED: {
            "filters": {
                "conjunction": "and",
                "items": [
                    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0},
                    {
                        "filter": f"filter:tasks:data.{SUSPECT_KEY}",
                        "operator": "greater",
                        "type": "Number",
                        "value": 0.5,
                    },
                ],
            },
            "ordering": [f"-tasks:data.{SUSPECT_KEY}"],
            "columnsDisplayType": {f"tasks:data.{SUSPECT_KEY}": "Number"},
            **_columns(data_key, ("annotations_results", "predictions_results", f"data.{SUSPECT_KEY}")),
        },
    }


def setup_project(
    ls,
    *,
    title: str,
    label_config: str,
    rows: list[dict],
    backend_url: str,
    threshold: float = 0.3,
    retrieve: bool = True,
    backend_auth: tuple | None = None,
    webhook_secret: str = "",
    show_predictions: bool | None = None,
) -> SetupReport:
    """`ls`: a label_studio_sdk.LabelStudio client; `rows`: dicts with `text`, optional `id` and `label`;
    `backend_auth`: the backend's basic auth, if it has one; `webhook_secret`: its WEBHOOK_SECRET;
    `show_predictions`: whether annotators see the model's guess pre-selected (None: as the project has it)."""
    config = parse_label_config(label_config)
    existing = next((p for p in ls.projects.list() if p.title == title), None)
    if existing is None:
        project = ls.projects.create(title=title, label_config=label_config)
    else:
        project = existing
        if project.label_config.strip() != label_config.strip():
            ls.projects.update(id=project.id, label_config=label_config)
    report = SetupReport(project=project.id, created=existing is None)

    there = _tasks_by_source(ls, project.id)
    labels: dict[str, str] = {}  # source id -> class, for the rows with a label
    tasks = []
    for number, row in enumerate(rows):
        source_id = str(row.get("id") or number)
        raw = (row.get("label") or "").strip()
        if raw:
            label = class_of(raw, config.classes)
            if label is None:
                raise ValueError(f"row {source_id}: label {raw!r} is not among {list(config.classes)}")
            labels[source_id] = label
        if source_id in there:
            report.already_there += 1
            continue
        there[source_id] = {}  # a second row with the same id is the same tweet
        task: dict[str, Any] = {"data": {config.data_key: row["text"], SOURCE_ID: source_id}}
        if raw:
            task["annotations"] = [{"result": [config.region(labels[source_id])]}]
            report.annotated += 1
        tasks.append(task)
    # Connected before the import: Label Studio tells the backend's webhook about the new tasks (TASKS_CREATED) and
    # its worker writes the window of them; retrieving predictions instead would have Label Studio ask /predict for
    # every task and store one each (200,000 for 200,000 tweets), and would race the worker into a second one.
    report.backend_connected = connect_backend(
        ls, project.id, backend_url, backend_auth=backend_auth, webhook_secret=webhook_secret
    )
    if tasks:
        report.scored_by_worker = any(_lets_in(hook, project.id) for hook in _webhooks(ls, project.id, backend_url))
        before = ls.projects.get(id=project.id).total_annotations_number or 0
        ls.projects.import_tasks(id=project.id, request=tasks)
        # Once (an end-to-end run, SQLite, while a worker wrote to another project) Label Studio kept an import's
        # tasks and none of its annotations, and said nothing: a first model would then train on fewer labels.
        if (ls.projects.get(id=project.id).total_annotations_number or 0) < before + report.annotated:
            log.warning("Label Studio stored fewer annotations than this import sent: writing the missing ones")
            there = _tasks_by_source(ls, project.id)
    report.imported = len(tasks)
    report.labels_restored = _restore_labels(ls, config, there, labels)
    ls.projects.update(id=project.id, sampling="Uncertainty sampling")
    if show_predictions is not None:
        # Label Studio's "Use predictions to prelabel tasks". Turning it off also empties the project's
        # model_version, and uncertainty sampling then draws at random: sync_model_version below sets it again.
        ls.projects.update(id=project.id, show_collab_predictions=show_predictions)

    tabs = {(as_dict(v).get("data") or {}).get("title"): as_dict(v) for v in ls.views.list(project=project.id)}
    for name, data in wanted_tabs(config.data_key, threshold).items():
        if name not in tabs:
            ls.views.create(project=project.id, data={"title": name, **data})
            report.tabs_created.append(name)
        elif any(tabs[name]["data"].get(key) != value for key, value in data.items()):
            # A tab of an earlier version of this setup: brought up to date (same id, so links to it still work).
            ls.views.update(id=tabs[name]["id"], project=project.id, data={**tabs[name]["data"], **data})
            report.tabs_updated.append(name)

    if retrieve and not report.scored_by_worker:
        ls.actions.create(
            id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
        )
    wait = WORKER_WAIT_SECONDS if report.scored_by_worker and report.imported else 0
    report.model_version = sync_model_version(ls, project.id, backend_url, backend_auth, wait=wait)
    report.predictions_shown = bool(ls.projects.get(id=project.id).show_collab_predictions)
    return report


def _tasks_by_source(ls, project: int) -> dict[str, dict]:
    """The project's tasks by the CSV id in their data (tasks imported otherwise have none and are left out)."""
    tasks = map(as_dict, ls.tasks.list(project=project, fields="task_only", page_size=1000))
    return {str(t["data"][SOURCE_ID]): t for t in tasks if t["data"].get(SOURCE_ID) is not None}


def _restore_labels(ls, config, tasks: dict[str, dict], labels: dict[str, str]) -> int:
    """Write the CSV's label to every task of it that has no annotation at all (a skipped task keeps its skip)."""
    missing = [
        (tasks[source]["id"], label)
        for source, label in labels.items()
        if tasks.get(source, {}).get("id") is not None
        and not (tasks[source].get("total_annotations") or tasks[source].get("cancelled_annotations"))
    ]
    for task, label in missing:
        ls.annotations.create(id=task, result=[config.region(label)])
    return len(missing)


def sync_model_version(
    ls, project: int, backend_url: str, backend_auth: tuple | None = None, *, wait: float = 0
) -> str | None:
    """Set the project's model_version to the backend's, once predictions of that version exist; `wait`: seconds
    to wait for them (the worker writes the window of an import's tweets seconds after it)."""
    answer = requests.get(
        f"{backend_url.rstrip('/')}/versions", params={"project": project}, auth=backend_auth, timeout=10
    )
    answer.raise_for_status()
    version = answer.json()["current"]
    deadline = time.time() + (0 if version == UNTRAINED else wait)
    while not model_version_counts(ls, project).get(version):
        if time.time() >= deadline:
            log.info("project %s: no predictions of %s yet; model_version left as is", project, version)
            return None
        time.sleep(0.5)
    ls.projects.update(id=project, model_version=version)
    return version


def request_training(
    backend_url: str, project: int, backend_auth: tuple | None = None, webhook_secret: str = ""
) -> dict:
    """What Label Studio's "Start Training" button does: the backend queues a training on the project's labels."""
    headers = webhook_headers(None, webhook_secret)
    answer = requests.post(
        f"{backend_url.rstrip('/')}/webhook",
        json={"action": "START_TRAINING", "project": {"id": project}},
        auth=backend_auth,
        headers=headers,
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()
