"""A Label Studio project ready for the loop, created or brought up to date; running it again duplicates nothing.

Project by title, label config, tweets from a CSV (`id,text`, the notebook's `activelearning.csv`; an optional
`label` column becomes annotations, to bootstrap the first model), the ML backend connected, Uncertainty
sampling, the Data Manager tabs "Most uncertain first" and "Uncertain (margin <= T)", predictions retrieved,
and the project's `model_version` set to the backend's (else uncertainty sampling silently falls back to random).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import requests

from .client import as_dict, model_version_counts
from .label_config import parse_label_config

log = logging.getLogger(__name__)

SOURCE_ID = "tweet_id"  # the CSV's id, kept in the task's data: how a second run knows what is imported
MOST_UNCERTAIN = "Most uncertain first"


def uncertain_tab(threshold: float) -> str:
    return f"Uncertain (margin <= {threshold:g})"


@dataclass
class SetupReport:
    project: int
    created: bool
    imported: int = 0
    annotated: int = 0
    already_there: int = 0
    backend_connected: bool = False
    tabs_created: list[str] = field(default_factory=list)
    model_version: str | None = None
    training_requested: bool = False


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
) -> SetupReport:
    """`ls`: a label_studio_sdk.LabelStudio client; `rows`: dicts with `text`, optional `id` and `label`;
    `backend_auth`: the backend's basic auth, if it has one."""
    config = parse_label_config(label_config)
    existing = next((p for p in ls.projects.list() if p.title == title), None)
    if existing is None:
        project = ls.projects.create(title=title, label_config=label_config)
    else:
        project = existing
        if project.label_config.strip() != label_config.strip():
            ls.projects.update(id=project.id, label_config=label_config)
    report = SetupReport(project=project.id, created=existing is None)

    seen = {
        str(as_dict(t)["data"].get(SOURCE_ID))
        for t in ls.tasks.list(project=project.id, fields="task_only", page_size=1000)
    }
    tasks = []
    for number, row in enumerate(rows):
        source_id = str(row.get("id") or number)
        if source_id in seen:
            report.already_there += 1
            continue
        seen.add(source_id)
        task: dict[str, Any] = {"data": {config.data_key: row["text"], SOURCE_ID: source_id}}
        label = (row.get("label") or "").strip()
        if label:
            if label not in config.classes:
                raise ValueError(f"row {source_id}: label {label!r} is not among {list(config.classes)}")
            task["annotations"] = [{"result": [config.region(label)]}]
            report.annotated += 1
        tasks.append(task)
    if tasks:
        ls.projects.import_tasks(id=project.id, request=tasks)
    report.imported = len(tasks)

    if not any(m.url.rstrip("/") == backend_url.rstrip("/") for m in ls.ml.list(project=project.id)):
        # Label Studio must send the backend's basic auth on every call, or /setup answers 401 and it disconnects.
        auth = (
            {"auth_method": "BASIC_AUTH", "basic_auth_user": backend_auth[0], "basic_auth_pass": backend_auth[1]}
            if backend_auth
            else {}
        )
        ls.ml.create(project=project.id, url=backend_url, title="tweets active learning", **auth)
        report.backend_connected = True
    ls.projects.update(id=project.id, sampling="Uncertainty sampling")

    tabs = {(as_dict(v).get("data") or {}).get("title") for v in ls.views.list(project=project.id)}
    wanted: dict[str, dict[str, Any]] = {
        MOST_UNCERTAIN: {"ordering": ["tasks:predictions_score"]},
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
        },
    }
    for name, data in wanted.items():
        if name not in tabs:
            ls.views.create(project=project.id, data={"title": name, **data})
            report.tabs_created.append(name)

    if retrieve:
        ls.actions.create(
            id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
        )
    report.model_version = sync_model_version(ls, project.id, backend_url, backend_auth)
    return report


def sync_model_version(ls, project: int, backend_url: str, backend_auth: tuple | None = None) -> str | None:
    """Set the project's model_version to the backend's, once predictions of that version exist."""
    answer = requests.get(
        f"{backend_url.rstrip('/')}/versions", params={"project": project}, auth=backend_auth, timeout=10
    )
    answer.raise_for_status()
    version = answer.json()["current"]
    if model_version_counts(ls, project).get(version):
        ls.projects.update(id=project, model_version=version)
        return version
    log.info("project %s: no predictions of %s yet; model_version left as is", project, version)
    return None


def request_training(
    backend_url: str, project: int, backend_auth: tuple | None = None, webhook_secret: str = ""
) -> dict:
    """What Label Studio's "Start Training" button does: the backend queues a training on the project's labels."""
    headers = {"X-Webhook-Secret": webhook_secret} if webhook_secret else {}
    answer = requests.post(
        f"{backend_url.rstrip('/')}/webhook",
        json={"action": "START_TRAINING", "project": {"id": project}},
        auth=backend_auth,
        headers=headers,
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()
