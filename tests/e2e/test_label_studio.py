"""End to end on the stack `make run` starts: a real Label Studio 1.23 and the backend under gunicorn."""

import time

import numpy as np
import pytest
import requests

from backend.labelstudio.label_config import parse_label_config
from backend.models.loader import load_version
from backend.predictions import class_probabilities
from backend.registry import Registry
from backend.settings import Settings
from backend.tables import read_csv
from tests.conftest import E2E_SETTINGS
from tests.helpers import LABEL_CONFIG, read_demo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def label_studio(stack):
    return stack.ls_url, stack.token


@pytest.fixture(scope="module")
def backend_url(stack):
    return stack.backend_url


@pytest.fixture(scope="module")
def backend_auth(stack):
    """The backend's login (make run makes one): Label Studio's connection and every call here but /health carry it."""
    return stack.backend_auth


def test_predictions_and_uncertainty_sampling_in_label_studio(
    label_studio, backend_url, backend_auth, trained_model_dir
):
    from label_studio_sdk import LabelStudio

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    texts = [r["text"] for r in read_demo("tweets_pool.csv")[:30]]

    project = ls.projects.create(title="e2e xenofobia", label_config=LABEL_CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"text": t} for t in texts])
    user, password = backend_auth
    ls.ml.create(
        project=project.id,
        url=backend_url,
        title="tweets",
        auth_method="BASIC_AUTH",
        basic_auth_user=user,
        basic_auth_pass=password,
    )
    ls.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []})

    tasks = list(ls.tasks.list(project=project.id, page_size=100))
    assert len(tasks) == len(texts)

    version = Registry(trained_model_dir).current("default")
    classifier = load_version(version, Settings(), dtype="float32")
    config = parse_label_config(LABEL_CONFIG)
    scores = {}
    for task in tasks:
        preds = [p if isinstance(p, dict) else p.model_dump() for p in task.predictions]
        assert len(preds) == 1, f"task {task.id} has {len(preds)} predictions"
        pred = preds[0]
        assert pred["model_version"] == version.name
        probs = class_probabilities(classifier, config, [task.data["text"]])[0]
        assert pred["score"] == pytest.approx(abs(probs[0] - probs[1]), abs=1e-4)
        assert pred["result"][0]["value"]["choices"] == [config.classes[int(np.argmax(probs))]]
        scores[task.id] = pred["score"]

    # Both gunicorn workers' counters add up in /metrics.
    served = requests.get(f"{backend_url}/metrics", auth=backend_auth, timeout=10).text
    line = next(
        row
        for row in served.splitlines()
        if row.startswith(f'ml_backend_predictions_total{{model_version="{version.name}"}}')
    )
    assert float(line.split()[-1]) >= len(texts)

    ls.projects.update(id=project.id, sampling="Uncertainty sampling", model_version=version.name)
    answer = requests.get(
        f"{url}/api/projects/{project.id}/next", headers={"Authorization": f"Token {token}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == min(scores, key=scores.get)


def test_setup_project_is_idempotent_and_leaves_the_project_ready(
    label_studio, backend_url, backend_auth, trained_model_dir
):
    from label_studio_sdk import LabelStudio

    from backend.labelstudio.project_setup import (
        MOST_UNCERTAIN,
        POSSIBLY_MISLABELED,
        setup_project,
        uncertain_tab,
        wanted_tabs,
    )

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    labeled = [
        {"id": f"l{i}", "text": r["text"], "label": r["label"]}
        for i, r in enumerate(read_demo("tweets_labeled.csv")[:10])
    ]
    labeled[0]["label"] = f" {labeled[0]['label'].upper()}"  # as a spreadsheet may spell it: imported as the class
    pool = [{"id": f"p{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[:20])]
    version = Registry(trained_model_dir).current("default").name

    def run(rows):
        return setup_project(
            ls,
            title="setup e2e",
            label_config=LABEL_CONFIG,
            rows=rows,
            backend_url=backend_url,
            threshold=0.25,
            backend_auth=backend_auth,
            webhook_secret="e2e-webhook-secret",
        )

    first = run(labeled + pool)
    assert first.created and (first.imported, first.annotated, first.already_there) == (30, 10, 0)
    assert first.backend_connected
    assert first.tabs_created == [MOST_UNCERTAIN, uncertain_tab(0.25), POSSIBLY_MISLABELED]
    assert first.model_version == version
    # Again, with one new tweet: only that one is imported, nothing else is added twice.
    second = run(labeled + pool + [{"id": "p-new", "text": "Un tuit nuevo sobre migración"}])
    assert not second.created and (second.imported, second.already_there) == (1, 30)
    assert not second.backend_connected and second.tabs_created == second.tabs_updated == []
    assert second.labels_restored == 0
    # This webhook carries a secret the stack's backend refuses, so its TASKS_CREATED reaches no worker: setup
    # retrieves the new tweet's prediction itself (test_tweets_imported_in_label_studio_join_... the other case).
    assert not second.scored_by_worker
    (new_task,) = [t for t in _scored(ls, first.project, 21) if t["data"]["tweet_id"] == "p-new"]
    assert [p["model_version"] for p in new_task["predictions"]] == [version]

    pid = first.project
    assert [p.title for p in ls.projects.list()].count("setup e2e") == 1
    tasks = list(ls.tasks.list(project=pid, fields="all", page_size=100))
    assert len(tasks) == 31
    assert sum(1 for t in tasks if t.annotations) == 10
    chosen = {a["result"][0]["value"]["choices"][0] for t in tasks for a in t.annotations}
    assert chosen and chosen <= set(parse_label_config(LABEL_CONFIG).classes)
    assert len(ls.ml.list(project=pid)) == 1
    # Label Studio sends events through the webhook setup made (its own would carry no secret), and everything
    # else, its Start Training included, through the ML connection, which carries the backend's login.
    hooks = [h if isinstance(h, dict) else h.model_dump() for h in ls.webhooks.list(project=str(pid))]
    hooks = [h for h in hooks if h["project"] == pid]
    assert [(h["url"], h["headers"]) for h in hooks] == [
        (f"{backend_url}/webhook", {"X-Webhook-Secret": "e2e-webhook-secret"})
    ]
    (connection,) = ls.ml.list(project=pid)
    assert (connection.auth_method, connection.basic_auth_user) == ("BASIC_AUTH", backend_auth[0])
    views = [v if isinstance(v, dict) else v.model_dump() for v in ls.views.list(project=pid)]
    titles = [v.get("data", {}).get("title") for v in views]
    assert titles.count(MOST_UNCERTAIN) == 1 and titles.count(uncertain_tab(0.25)) == 1
    assert titles.count(POSSIBLY_MISLABELED) == 1
    # Label Studio stores the columns as sent; a tab of an older setup (no column settings) is brought up to date.
    tab = next(v for v in views if v["data"]["title"] == MOST_UNCERTAIN)
    wanted = wanted_tabs("text", 0.25)[MOST_UNCERTAIN]
    assert tab["data"]["hiddenColumns"] == wanted["hiddenColumns"]
    ls.views.update(id=str(tab["id"]), project=pid, data={"title": MOST_UNCERTAIN, "ordering": ["tasks:id"]})
    assert run(labeled + pool).tabs_updated == [MOST_UNCERTAIN]
    tab = ls.views.get(id=str(tab["id"]))
    tab = tab if isinstance(tab, dict) else tab.model_dump()
    assert tab["data"]["ordering"] == wanted["ordering"] and tab["data"]["columnsWidth"] == wanted["columnsWidth"]
    project = ls.projects.get(id=pid)
    assert project.model_version == version and project.sampling == "Uncertainty sampling"
    # A label that went missing (Label Studio once dropped an import's annotations) is written again, and only
    # that one: a task an annotator skipped keeps its skip.
    by_source = {t.data["tweet_id"]: t.id for t in ls.tasks.list(project=pid, fields="task_only")}
    (lost,) = ls.annotations.list(id=by_source["l3"])
    ls.annotations.delete(id=lost.id)
    (kept,) = ls.annotations.list(id=by_source["l4"])
    ls.annotations.delete(id=kept.id)
    ls.annotations.create(id=by_source["l4"], result=[], was_cancelled=True)
    again = run(labeled + pool)
    assert (again.imported, again.labels_restored) == (0, 1)
    (restored,) = ls.annotations.list(id=by_source["l3"])
    assert restored.result == lost.result
    skipped = ls.tasks.get(id=by_source["l4"])
    assert (skipped.total_annotations, skipped.cancelled_annotations) == (0, 1)


def _setup(ls, stack, title: str, rows: list[dict], **options):
    """setup-project on the stack, as its CLI runs it there (the stack's login and webhook secret)."""
    from backend.labelstudio.project_setup import setup_project

    return setup_project(
        ls,
        title=title,
        label_config=LABEL_CONFIG,
        rows=rows,
        backend_url=stack.backend_url,
        backend_auth=stack.backend_auth,
        webhook_secret=stack.webhook_secret,
        **options,
    )


def _scored(ls, project: int, expected: int, seconds: float = 60) -> list[dict]:
    """The project's unlabeled tasks once `expected` of them have a prediction (the worker scores imports)."""
    deadline = time.time() + seconds
    while True:
        tasks = [t if isinstance(t, dict) else t.model_dump() for t in ls.tasks.list(project=project, fields="all")]
        unlabeled = [t for t in tasks if not t["annotations"]]
        if sum(1 for t in unlabeled if t["predictions"]) >= expected or time.time() > deadline:
            return unlabeled
        time.sleep(0.5)


def test_tweets_imported_in_label_studio_join_the_uncertainty_queue(label_studio, stack):
    """Label Studio 1.23 asks a backend for a new task's prediction only when an annotator opens it, and samples
    only tasks with a prediction of the project's model_version: the worker scores what an import adds."""
    from label_studio_sdk import LabelStudio

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    pool = [{"id": f"i{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[20:40])]
    setup = _setup(ls, stack, "imports e2e", pool)
    # A new project: connected before the import, so the worker scores the tweets (no prediction per task from
    # Label Studio's retrieval) and sets the project's model_version with its window.
    assert setup.scored_by_worker
    written = {p["model_version"] for t in _scored(ls, setup.project, len(pool)) for p in t["predictions"]}
    deadline = time.time() + 30
    while {ls.projects.get(id=setup.project).model_version} != written:
        assert time.time() < deadline, f"the new project's model_version is not that of its predictions {written}"
        time.sleep(0.5)
    texts = [r["text"] for r in read_demo("tweets_pool.csv")[40:45]]
    answer = requests.post(
        f"{url}/api/projects/{setup.project}/import",
        json=[{"text": text} for text in texts],  # as the Data Manager's Import sends them
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    )
    assert answer.status_code == 201 and answer.json()["task_count"] == 5
    started = time.time()
    tasks = _scored(ls, setup.project, len(pool) + 5)
    seconds = time.time() - started
    imported = [t for t in tasks if t["data"]["text"] in texts]
    model_version = ls.projects.get(id=setup.project).model_version
    assert len(imported) == 5, "imported tasks missing"
    assert all([p["model_version"] for p in t["predictions"]] == [model_version] for t in imported), (
        f"not one prediction each of {model_version} after {seconds:.0f} s: {[t['predictions'] for t in imported]}"
    )
    # They are in the queue: Label Studio's score column (what uncertainty sampling orders by) has their margin.
    scores = {t["id"]: t["predictions"][0]["score"] for t in imported}
    assert all(0 <= score <= 1 for score in scores.values())
    # setup-project again with two more tweets: the webhook lets them in, so the worker scores them and setup does
    # not retrieve them too (which would race it into a second prediction of the same version).
    more = [{"id": f"i{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[45:47], start=45)]
    again = _setup(ls, stack, "imports e2e", pool + more)
    assert again.imported == 2 and again.scored_by_worker
    tasks = _scored(ls, setup.project, len(pool) + 7)
    assert all([p["model_version"] for p in t["predictions"]] == [model_version] for t in tasks)


def test_annotators_can_label_without_the_guess_and_keep_the_uncertainty_queue(label_studio, stack):
    from label_studio_sdk import LabelStudio

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    headers = {"Authorization": f"Token {token}"}
    rows = [{"id": f"h{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[50:70])]

    def setup(show: bool | None):
        return _setup(ls, stack, "hidden e2e", rows, show_predictions=show)

    def next_task(project: int) -> dict:
        answer = requests.get(f"{url}/api/projects/{project}/next", headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    hidden = setup(False)
    assert not hidden.predictions_shown and hidden.model_version
    project = ls.projects.get(id=hidden.project)
    assert project.show_collab_predictions is False and project.model_version == hidden.model_version
    scores = {
        t.id: t.predictions[0]["score"] if isinstance(t.predictions[0], dict) else t.predictions[0].score
        for t in ls.tasks.list(project=hidden.project, fields="all")
    }
    # The queue still starts at the most uncertain tweet; the labeling view gets no guess to pre-select.
    first = next_task(hidden.project)
    assert first["id"] == min(scores, key=scores.get) and first["predictions"] == []
    shown = setup(True)
    assert shown.predictions_shown and next_task(shown.project)["predictions"]
    # Label Studio's own switch ("Use predictions to prelabel tasks") empties model_version, which makes its
    # uncertainty sampling draw at random: what setup-project sets back.
    ls.projects.update(id=shown.project, show_collab_predictions=False)
    assert not ls.projects.get(id=shown.project).model_version
    assert setup(None).model_version == hidden.model_version


def test_export_matches_the_predictions_in_label_studio(
    label_studio, backend_url, backend_auth, trained_model_dir, tmp_path
):
    import json

    from label_studio_sdk import LabelStudio

    from backend.export import export_project
    from backend.labelstudio.project_setup import setup_project
    from backend.settings import Settings

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    pool = [{"id": f"x{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[30:55])]
    pid = setup_project(
        ls, title="export e2e", label_config=LABEL_CONFIG, rows=pool, backend_url=backend_url, backend_auth=backend_auth
    ).project
    settings = Settings(
        model_dir=trained_model_dir, label_studio_url=url, label_studio_api_key=token, inference_dtype="float32"
    )

    assert export_project(pid, tmp_path / "all.json", settings) == len(pool)
    table = json.loads((tmp_path / "all.json").read_text(encoding="utf-8"))
    scores = {}
    # The worker wrote the window of the new project's tweets (QUEUE_WINDOW of them); export has every one.
    for task in ls.tasks.list(project=pid, fields="all", page_size=100):
        for prediction in [p if isinstance(p, dict) else p.model_dump() for p in task.predictions]:
            scores[task.id] = (prediction["score"], prediction["result"][0]["value"]["choices"][0])
    assert len(scores) == min(len(pool), int(E2E_SETTINGS["QUEUE_WINDOW"])) and len(table) == len(pool)
    for row in table:
        assert row["p_ok"] + row["p_xenófobo"] == pytest.approx(1, abs=1e-5)
        if row["id"] in scores:
            assert row["margin"] == pytest.approx(scores[row["id"]][0], abs=1e-4)
            assert row["label"] == scores[row["id"]][1]
    # The window is the most uncertain of them.
    assert {r["id"] for r in table[: len(scores)]} == set(scores)
    assert [r["margin"] for r in table] == sorted(r["margin"] for r in table)

    # Between the 10th and 11th smallest margin, so that rounding in the table cannot move a task across it.
    margins = sorted(r["margin"] for r in table)
    threshold = (margins[9] + margins[10]) / 2
    kept = export_project(pid, tmp_path / "uncertain.csv", settings, threshold=threshold)
    rows = read_csv(tmp_path / "uncertain.csv")
    assert kept == len(rows) == 10 and all(float(r["margin"]) <= threshold for r in rows)
    assert list(rows[0]) == ["id", "text", "p_ok", "p_xenófobo", "margin", "label"]


def test_setup_and_export_work_with_a_personal_access_token(stack, personal_access_token, tmp_path):
    """LABEL_STUDIO_API_KEY may be a personal access token (a JWT refresh token) instead of a legacy token."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    pat = personal_access_token
    assert pat.count(".") == 2 and pat != stack.token  # a JWT, not the legacy token
    import csv

    tweets = tmp_path / "tweets.csv"
    with tweets.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([f"t{i}", r["text"]] for i, r in enumerate(read_demo("tweets_pool.csv")[90:95]))
    env = {**os.environ, **stack.env, "LABEL_STUDIO_API_KEY": pat}

    def cli(*args):
        answer = subprocess.run(
            [sys.executable, "-m", "backend", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert answer.returncode == 0, answer.stderr[-3000:]
        return answer.stdout

    out = cli("setup-project", "--csv", str(tweets), "--title", "PAT e2e", "--backend-url", stack.backend_url)
    assert "created; 5 tweets imported" in out
    pid = int(out.split()[1].rstrip(":"))
    cli("export", "--project", str(pid), "--out", str(tmp_path / "out.csv"))
    assert len(read_csv(tmp_path / "out.csv")) == 5


def test_a_backend_behind_basic_auth_is_connected_with_its_credentials(stack, tmp_path):
    """With BASIC_AUTH_USER/PASS set, setup-project gives Label Studio the credentials, and predictions flow."""
    from label_studio_sdk import LabelStudio

    from backend.labelstudio.project_setup import setup_project
    from backend.stack.processes import free_port, start_backend, stop

    auth = ("annotators", "s3cret-pass")
    env = {**stack.env, "BASIC_AUTH_USER": auth[0], "BASIC_AUTH_PASS": auth[1]}
    proc, url = start_backend(env, free_port(), tmp_path / "backend.log")
    try:
        assert requests.post(f"{url}/setup", json={"schema": LABEL_CONFIG}, timeout=5).status_code == 401
        ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
        pool = [{"id": f"a{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[100:106])]
        report = setup_project(
            ls, title="basic auth e2e", label_config=LABEL_CONFIG, rows=pool, backend_url=url, backend_auth=auth
        )
        version = Registry(stack.folder / "models").current("default").name
        assert report.model_version == version
        tasks = list(ls.tasks.list(project=report.project, fields="all", page_size=100))
        assert [len(t.predictions) for t in tasks] == [1] * len(pool)
    finally:
        stop(proc)


def test_a_connection_made_before_the_backend_had_a_login_gets_it(stack, tmp_path):
    """A `make run` stack from before the backend's login connected Label Studio without one; once the backend asks
    for it, setup-project (which `make run` runs again) gives the connection the login, and Label Studio, which
    checks a changed connection with /health and /setup, accepts it."""
    from label_studio_sdk import LabelStudio

    from backend.labelstudio.project_setup import setup_project
    from backend.stack.processes import free_port, start_backend, stop

    port = free_port()
    open_env = {k: v for k, v in stack.env.items() if not k.startswith("BASIC_AUTH")}
    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
    pool = [{"id": f"u{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[110:114])]

    def setup(auth):
        return setup_project(
            ls,
            title="login upgrade e2e",
            label_config=LABEL_CONFIG,
            rows=pool,
            backend_url=f"http://127.0.0.1:{port}",
            backend_auth=auth,
            webhook_secret=stack.webhook_secret,
        )

    proc, url = start_backend(open_env, port, tmp_path / "open.log")
    try:
        before = setup(None)
    finally:
        stop(proc)
    (connection,) = ls.ml.list(project=before.project)
    assert connection.basic_auth_user == "label-studio"  # the secret as password, as before the login
    proc, url = start_backend(stack.env, port, tmp_path / "login.log")
    try:
        assert requests.post(f"{url}/setup", json={"schema": LABEL_CONFIG}, timeout=5).status_code == 401
        after = setup(stack.backend_auth)
        assert not after.backend_connected and after.model_version == before.model_version
        (connection,) = ls.ml.list(project=before.project)
        assert (connection.auth_method, connection.basic_auth_user) == ("BASIC_AUTH", stack.backend_username)
    finally:
        stop(proc)


def test_the_client_reads_labels_and_unlabeled_tasks_as_a_training_needs(label_studio):
    """The listings ask Label Studio for a few fields only (it applies them to nested annotations too): every
    label still comes back, the newest annotation that was not skipped wins, and a task only skipped is no label
    (Label Studio counts it as not annotated, so it is scored with the unlabeled ones)."""
    from label_studio_sdk import LabelStudio

    from backend.labelstudio.client import LabelStudioClient

    url, token = label_studio
    ls = LabelStudio(base_url=url, api_key=token)
    config = parse_label_config(LABEL_CONFIG)
    project = ls.projects.create(title="e2e client reads", label_config=LABEL_CONFIG).id
    texts = ["cambió de opinión", "saltado", "uno ok", "sin etiqueta 1", "sin etiqueta 2 ñandú 😂"]
    ids = list(
        ls.projects.import_tasks(id=project, request=[{"text": t} for t in texts], return_task_ids=True).task_ids
    )
    ls.annotations.create(id=ids[0], result=[config.region("ok")])
    ls.annotations.create(id=ids[0], result=[config.region("xenófobo")])  # newer: wins
    ls.annotations.create(id=ids[1], result=[], was_cancelled=True)
    ls.annotations.create(id=ids[2], result=[config.region("ok")])

    client = LabelStudioClient(url, token)
    labeled = {t.id: (t.text, t.label) for t in client.labeled_tasks(project, config)}
    assert labeled == {ids[0]: (texts[0], "xenófobo"), ids[2]: (texts[2], "ok")}
    unlabeled = {t.id: t.text for t in client.unlabeled(project, config)}
    assert unlabeled == {ids[1]: texts[1], ids[3]: texts[3], ids[4]: texts[4]}
    # The unscored ones: unlabeled and without any prediction, of whatever version.
    client.write_predictions(
        project, [{"task": ids[3], "result": [config.region("ok")], "score": 0.4, "model_version": "other-v1"}]
    )
    assert [t.id for t in client.unlabeled(project, config, unscored=True)] == [ids[1], ids[4]]
    # Imported after a task: the ones with a greater id (Label Studio numbers tasks in order).
    assert [t.id for t in client.unlabeled(project, config, after=ids[3])] == [ids[4]]
    assert [t.id for t in client.unlabeled(project, config, unscored=True, after=ids[1])] == [ids[4]]
    # What the worker's pool reads: every task in id order, a page at a time past the last id read; the annotated
    # ids (a task only skipped counts as unannotated, as above); the count.
    assert client.tasks(project, config) == list(zip(ids, texts, strict=True))
    assert client.tasks(project, config, after=ids[0], limit=2) == [(ids[1], texts[1]), (ids[2], texts[2])]
    assert client.annotated_ids(project) == client.annotated(project, config)[1] == {ids[0], ids[2]}
    assert sorted(client.task_ids(project)) == ids and client.task_count(project) == 5
