"""What a project manager sees: the demo project's report, opened in headless Chromium after the worker trained a
first version on the demo labels and 10 annotations, and a second one after 10 more.

The screenshot goes to test-artifacts/browser/report.png (or $TEST_ARTIFACTS/browser/); docs/report.png is a
copy of one.
"""

import os
import subprocess
import sys
import time

import pytest
import requests

from backend.labelstudio.label_config import default_label_config
from backend.labelstudio.project_setup import POSSIBLY_MISLABELED, SUSPECT_KEY, connect_backend, setup_project
from backend.registry import Registry
from backend.stack.demo import demo_rows
from tests.helpers import CHROMIUM_FLAGS, CONFIG, ROOT, v

pytestmark = pytest.mark.e2e


def _wait(condition, seconds, what, log):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"{what}:\n{log()}"
        time.sleep(1)


@pytest.fixture(scope="module")
def demo(stack):
    """The demo project with two versions of its own, both from fast runs (linear): the first after 10
    annotations beside the demo labels, the second after 10 more (which records kappa to the first). Not Start
    Training for the first, as `make run`'s demo does: its full run may serve a transformer, which a fast run's
    linear model then has to beat on the same held-out labels, and on these few invented tweets it may not (seen
    in CI: .600 against .706, and no second version)."""
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
    # The demo's tweets under a title of its own: the stack is shared, and test_compose creates "the" demo.
    pid = setup_project(
        ls,
        title="report e2e: demo tweets",
        label_config=default_label_config(),
        rows=demo_rows(),
        backend_url=stack.backend_url,
        retrieve=False,
        backend_auth=stack.backend_auth,
        webhook_secret=stack.webhook_secret,
    ).project
    log = lambda: (stack.folder / "worker.log").read_text()[-4000:]  # noqa: E731
    registry = Registry(stack.folder / "models")
    unlabeled = [t.id for t in ls.tasks.list(project=pid, fields="all", page_size=1000) if not t.total_annotations]
    for number in (1, 2):  # RETRAIN_EVERY annotations start a fast run
        for task_id in unlabeled[(number - 1) * 10 : number * 10]:
            ls.annotations.create(id=task_id, result=[CONFIG.region("ok")])
        version = v(registry, str(pid), number)
        _wait(lambda: ls.projects.get(id=pid).model_version == version, 600, f"no version {number}", log)  # noqa: B023
    return pid


def test_the_demo_report_shows_scatter_curve_stop_signal_and_suspects(stack, demo, chromium, artifacts):
    from label_studio_sdk import LabelStudio
    from playwright.sync_api import sync_playwright

    pid = demo
    registry = Registry(stack.folder / "models")
    history = registry.history(str(pid))
    assert [h["version"] for h in history] == [v(registry, str(pid), 1), v(registry, str(pid), 2)]
    assert history[0]["kappa_previous"] is None and -1 <= history[1]["kappa_previous"] <= 1
    headers = {"Authorization": f"Token {stack.token}"}
    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
    unlabeled = sum(1 for t in ls.tasks.list(project=pid, fields="all", page_size=1000) if not t.total_annotations)
    assert unlabeled == 403 - 202 - 20  # the demo's tweets, its labels, the annotations above

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            # The project manager's browser asks for the backend's login (make run prints it); it covers the
            # plotly.js the page loads from the backend too.
            # (Without one, headless Chromium ends the navigation with ERR_INVALID_AUTH_CREDENTIALS, not a page.)
            user, password = stack.backend_auth
            assert requests.get(f"{stack.backend_url}/report?project={pid}", timeout=30).status_code == 401
            login = {"username": user, "password": password}
            page = browser.new_page(viewport={"width": 1400, "height": 900}, http_credentials=login)
            answer = page.goto(f"{stack.backend_url}/report?project={pid}")
            assert answer is not None and answer.ok
            page.locator("#figure-scatter path.point").first.wait_for()
            page.locator("#figure-curve path.point").first.wait_for()
            # Rendered by the plotly.js the backend serves (the page reaches no CDN): one point per unlabeled task.
            assert page.locator("#figure-scatter path.point").count() == unlabeled
            macro = page.evaluate(
                "() => document.getElementById('figure-curve').data"
                ".filter(t => t.name.endsWith('macro F1')).reduce((n, t) => n + t.x.length, 0)"
            )
            assert macro == len(history)
            signal = page.locator("#stop-signal").inner_text()
            assert signal.startswith("Keep labeling") and "uncertain band" in signal
            suspects = page.locator("#suspects tbody tr")
            assert suspects.count() > 0 or page.locator("#no-suspects").count() == 1
            links = [a.get_attribute("href") for a in suspects.locator("a").all()]
            assert all(link.startswith(f"{stack.ls_url}/projects/{pid}/data?task=") for link in links)
            page.screenshot(path=artifacts / "report.png", full_page=True)
        finally:
            browser.close()

    # setup-project's "Possibly mislabeled" tab lists the same suspects: the worker's refresh_suspects job writes
    # their scores into the tasks after the re-scoring (the same out-of-fold model as the page's). That job runs
    # after the promotion, so until it has, the tab may still hold the first version's suspects (seen in CI).
    suspect_ids = {int(link.rsplit("=", 1)[1]) for link in links}
    views = requests.get(f"{stack.ls_url}/api/dm/views/", params={"project": pid}, headers=headers, timeout=30).json()
    tab = next(v["id"] for v in views if v["data"]["title"] == POSSIBLY_MISLABELED)

    def tab_tasks() -> list[dict]:
        answer = requests.get(
            f"{stack.ls_url}/api/tasks/", params={"view": tab, "page_size": 500}, headers=headers, timeout=30
        )
        return answer.json()["tasks"]

    assert suspect_ids
    _wait(
        lambda: suspect_ids <= {t["id"] for t in tab_tasks()},
        120,
        f"the tab never lists the page's suspects {sorted(suspect_ids)}",
        lambda: f"tab: {sorted(t['id'] for t in tab_tasks())}\n" + (stack.folder / "worker.log").read_text()[-4000:],
    )
    listed = tab_tasks()
    scores = [t["data"][SUSPECT_KEY] for t in listed]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.5

    # The same figures as data.
    versions = requests.get(
        f"{stack.backend_url}/versions", params={"project": pid}, auth=stack.backend_auth, timeout=30
    ).json()
    assert versions["details"][-1]["kappa_previous"] == history[1]["kappa_previous"]
    assert versions["stop"]["sentence"] == signal.split(" Now ")[0].strip()
    # The worker logged them after the promotion.
    assert (
        f"project {pid}: {v(Registry(stack.folder / 'models'), str(pid), 2)} promoted; kappa to the previous version"
        in (stack.folder / "worker.log").read_text()
    )
    metrics = requests.get(f"{stack.backend_url}/metrics", auth=stack.backend_auth, timeout=30).text
    assert f'ml_backend_uncertain_share{{project="{pid}"}}' in metrics
    assert f'ml_backend_kappa_previous{{project="{pid}"}}' in metrics


def test_the_report_command_writes_the_same_page(stack, demo, tmp_path):
    out = tmp_path / "report.html"
    subprocess.run(
        [sys.executable, "-m", "backend", "report", "--project", str(demo), "--out", str(out)],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    page = out.read_text(encoding="utf-8")
    served = requests.get(
        f"{stack.backend_url}/report", params={"project": demo}, auth=stack.backend_auth, timeout=120
    ).text
    for part in ("figure-scatter", "figure-curve", "figure-stop", "stop-signal"):
        assert part in page and part in served
    assert "report/plotly.min.js" not in page and "report/plotly.min.js" in served  # the file inlines plotly.js


def test_bad_report_requests_get_clear_answers(stack):
    from label_studio_sdk import LabelStudio

    def report(project: int) -> requests.Response:
        return requests.get(
            f"{stack.backend_url}/report", params={"project": project}, auth=stack.backend_auth, timeout=60
        )

    unknown = report(99999)
    assert unknown.status_code == 404 and "project 99999 is not connected to this backend" in unknown.json()["error"]
    # A project without versions, with labels of one class only: a page that says so, once it is connected to this
    # backend (the backend's Label Studio token reads every project; the report shows only those it serves).
    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
    project = ls.projects.create(title="report without versions", label_config=CONFIG_XML)
    ids = ls.projects.import_tasks(
        id=project.id, request=[{"text": f"tuit número {i}"} for i in range(4)], return_task_ids=True
    ).task_ids
    ls.annotations.create(id=ids[0], result=[CONFIG.region("ok")])
    elsewhere = report(project.id)
    assert elsewhere.status_code == 404 and "not connected to this backend" in elsewhere.json()["error"]
    connect_backend(
        ls, project.id, stack.backend_url, backend_auth=stack.backend_auth, webhook_secret=stack.webhook_secret
    )
    page = report(project.id)
    assert page.status_code == 200
    assert 'id="no-versions"' in page.text and "needs at least 2 labels of every class" in page.text


CONFIG_XML = (ROOT / "label_config.xml").read_text(encoding="utf-8")
