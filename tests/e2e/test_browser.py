"""What an annotator sees: headless Chromium logs into the stack's Label Studio, opens the "Most uncertain first"
tab and the labeling view of its first task, where the model's pre-annotation is already selected.

Screenshots go to test-artifacts/browser/ (or $TEST_ARTIFACTS/browser/).
"""

import re

import pytest
import requests

from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.project_setup import MOST_UNCERTAIN, setup_project
from tests.helpers import CHROMIUM_FLAGS, LABEL_CONFIG, read_demo

pytestmark = pytest.mark.e2e


def test_annotator_sees_the_pre_annotation_of_the_most_uncertain_task(stack, chromium, artifacts):
    from label_studio_sdk import LabelStudio
    from playwright.sync_api import sync_playwright

    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
    pool = [{"id": f"b{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[60:80])]
    pid = setup_project(
        ls,
        title="browser e2e",
        label_config=LABEL_CONFIG,
        rows=pool,
        backend_url=stack.backend_url,
        backend_auth=stack.backend_auth,
        webhook_secret=stack.webhook_secret,
    ).project
    predictions, texts = {}, {}
    for task in ls.tasks.list(project=pid, fields="all", page_size=100):
        texts[task.id] = task.data["text"]
        (prediction,) = [p if isinstance(p, dict) else p.model_dump() for p in task.predictions]
        predictions[task.id] = (
            prediction["score"],
            prediction["result"][0]["value"]["choices"][0],
            prediction["model_version"],
        )
    first = min(predictions, key=lambda t: predictions[t][0])
    _, label, version = predictions[first]
    views = requests.get(
        f"{stack.ls_url}/api/dm/views/",
        params={"project": pid},
        headers={"Authorization": f"Token {stack.token}"},
        timeout=30,
    ).json()
    tab = next(v["id"] for v in views if v["data"].get("title") == MOST_UNCERTAIN)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{stack.ls_url}/user/login/")
            page.fill("#email", stack.username)
            page.fill("#password", stack.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url)

            page.goto(f"{stack.ls_url}/projects/{pid}/data?tab={tab}")
            rows = page.locator(".lsf-table__row-wrapper")
            rows.first.wait_for()
            page.screenshot(path=artifacts / "most-uncertain-first.png")
            # The tab lists every task, the one the model is least sure of on top.
            assert rows.count() == len(pool)
            assert rows.first.inner_text().split()[0] == str(first)
            # Its columns are the id, the score, the predicted label and the tweet, which fits on the screen.
            assert page.get_by_text("Prediction score").first.is_visible()
            assert page.get_by_text("Inner ID", exact=True).count() == 0
            cell = rows.first.get_by_text(texts[first][:30], exact=False).first
            box = cell.bounding_box()
            assert box is not None and box["x"] + 100 < 1400, box

            rows.first.click()
            page.wait_for_url(lambda url: f"task={first}" in url)
            chosen = page.locator(f'input[type=checkbox][name="{label}"]')
            chosen.wait_for()
            # The prediction's tab names the model version, shortened in the middle by Label Studio
            # ("10e754-d...ult-v1"): the instance id's start and the version number's end show.
            page.get_by_text(re.compile(re.escape(version[:6]) + ".*" + re.escape(version[-2:]))).first.wait_for()
            page.screenshot(path=artifacts / "labeling-view.png")
            assert chosen.is_checked()
            for other in set(parse_label_config(LABEL_CONFIG).classes) - {label}:
                assert not page.locator(f'input[type=checkbox][name="{other}"]').is_checked()
        finally:
            browser.close()
