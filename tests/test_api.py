"""The protocol through Flask's test client, with the real (briefly trained) MiniLM model."""

import base64
import json

import numpy as np
import pytest
import requests
from flask import Flask, jsonify, request
from pydantic import SecretStr

from backend.api import create_app
from backend.labelstudio.label_config import parse_label_config
from backend.predictions import class_probabilities
from backend.registry import DEFAULT_SCOPE, Registry
from backend.settings import Settings
from backend.stack.processes import free_port
from tests.helpers import LABEL_CONFIG, pool_texts, serving

TWEETS = pool_texts(20)


@pytest.fixture()
def v1(trained_model_dir):
    """The trained default version's name (with the instance id of its MODEL_DIR)."""
    return Registry(trained_model_dir).name_for(DEFAULT_SCOPE, 1)


def _predict_body(texts, **extra):
    tasks = [{"id": i + 1, "data": {"text": t}, "annotations": [], "predictions": []} for i, t in enumerate(texts)]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": LABEL_CONFIG, "params": {}, **extra}


def test_health_and_root(client):
    for path in ("/health", "/"):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.json["status"] == "UP"


def test_setup_reports_the_served_version(client, app, v1):
    answer = client.post(
        "/setup",
        json={
            "project": "1.1700000000",
            "schema": LABEL_CONFIG,
            "hostname": "x",
            "access_token": "t",
            "extra_params": None,
        },
    )
    assert answer.status_code == 200
    assert answer.json["model_version"] == v1
    assert app.extensions["model_store"].get("1").version == v1


def test_predict_one_entry_per_task_with_margin_scores(client, app, v1):
    answer = client.post("/predict", json=_predict_body(TWEETS))
    assert answer.status_code == 200
    results = answer.json["results"]
    assert len(results) == len(TWEETS)

    classifier = app.extensions["model_store"].get("1")
    config = parse_label_config(LABEL_CONFIG)
    probs = class_probabilities(classifier, config, TWEETS)
    margins = np.abs(probs[:, 0] - probs[:, 1])
    for result, p, m in zip(results, probs, margins, strict=True):
        assert result["model_version"] == v1
        # float32 matrix products may differ in the last digits between two calls (torch picks its kernels by
        # shape and threads): seen once at 1.6e-5; a wrong score would be off by far more.
        assert result["score"] == pytest.approx(m, abs=1e-4)
        [region] = result["result"]
        assert region == {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [config.classes[int(p.argmax())]]},
        }
    assert answer.json["model_version"] == v1


def test_scores_do_not_depend_on_the_batch(client):
    alone = client.post("/predict", json=_predict_body(TWEETS[3:4])).json["results"][0]["score"]
    batched = client.post("/predict", json=_predict_body(TWEETS)).json["results"][3]["score"]
    assert alone == pytest.approx(batched, abs=1e-4)


def test_bad_tasks_get_empty_slots_in_place(client):
    texts = ["Los migrantes aportan mucho al país", "x" * 100_000, "", "Que se vayan todos a su país"]
    body = _predict_body(texts)
    body["tasks"].append({"id": 9, "data": {"other": "no text field"}})
    body["tasks"].append({"id": 10, "data": {"text": 12345}})
    body["tasks"].append("not a task")
    results = client.post("/predict", json=body).json["results"]
    assert len(results) == 7
    assert [bool(r) for r in results] == [True, False, False, True, False, False, False]
    assert results[1] == [] and results[4] == []


@pytest.mark.parametrize(
    "payload, status, message",
    [
        (b"{not json", 400, "JSON object"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"label_config": LABEL_CONFIG}).encode(), 400, "tasks"),
        (json.dumps({"tasks": "abc", "label_config": LABEL_CONFIG}).encode(), 400, "tasks"),
        (
            json.dumps({"tasks": [], "label_config": "<View><Image name='i' value='$i'/></View>"}).encode(),
            422,
            "no <Choices> bound",
        ),
        (json.dumps({"tasks": [], "project": "../../etc", "label_config": LABEL_CONFIG}).encode(), 400, "project"),
        # Each found by fuzzing the backend, each a 500 before.
        (json.dumps({"tasks": [], "project": "1" * 300, "label_config": LABEL_CONFIG}).encode(), 400, "project"),
        (json.dumps({"tasks": [], "project": "²", "label_config": LABEL_CONFIG}).encode(), 400, "project"),
        (json.dumps({"tasks": [], "label_config": 5}).encode(), 422, "must be a string"),
        (json.dumps({"tasks": [], "label_config": ["<View/>"]}).encode(), 422, "must be a string"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deep"),
        (
            json.dumps({"tasks": [], "label_config": '<!DOCTYPE x [<!ENTITY a "aaaa">]><View>&a;</View>'}).encode(),
            422,
            "entities",
        ),
    ],
)
def test_malformed_predict_requests_get_clear_json_errors(client, payload, status, message):
    answer = client.post("/predict", data=payload, content_type="application/json")
    assert answer.status_code == status
    assert message in answer.json["error"]


def test_setup_and_versions_refuse_mistyped_fields(client):
    assert client.post("/setup", json={"schema": {"a": 1}}).status_code == 422
    for project in ("../x", "²", "9" * 5000):
        answer = client.get("/versions", query_string={"project": project})
        assert answer.status_code == 400 and "project" in answer.json["error"]


def test_a_lone_surrogate_costs_its_own_prediction_at_most(client):
    # As a scraper's JSON carries half an emoji: a \ud83d escape with no partner.
    body = json.dumps(_predict_body(["Vuelvan a su país X", "Y", "Qué lindo día"]))
    body = body.replace("X", "\\ud83d").replace('"Y"', '"\\udc00"')
    answer = client.post("/predict", data=body, content_type="application/json")
    assert answer.status_code == 200
    assert [bool(r) for r in answer.json["results"]] == [True, True, True]


def test_tasks_without_text_are_logged_once_per_request(client, caplog):
    tasks = [{"id": i, "data": {}} for i in range(500)]
    with caplog.at_level("WARNING", logger="backend.predictions"):
        client.post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    lines = [r.getMessage() for r in caplog.records if r.name == "backend.predictions"]
    assert len(lines) == 1 and lines[0].startswith("500 of 500 tasks have no text")


def test_empty_task_list_answers_empty_results(client):
    assert client.post("/predict", json=_predict_body([])).json["results"] == []


def test_setup_with_an_unknown_config_is_a_4xx(client):
    answer = client.post("/setup", json={"project": "1.1", "schema": "<View><Audio name='a' value='$a'/></View>"})
    assert answer.status_code == 422 and "Choices" in answer.json["error"]


def test_multiple_choice_configs_get_422_naming_the_attribute(client):
    multiple = LABEL_CONFIG.replace('choice="single"', 'choice="multiple"')
    setup = client.post("/setup", json={"project": "1.1", "schema": multiple})
    predict = client.post("/predict", json=_predict_body(TWEETS[:2], label_config=multiple))
    for answer in (setup, predict):
        assert answer.status_code == 422 and 'choice="multiple"' in answer.json["error"]


def test_body_over_the_limit_is_413(trained_model_dir):
    app = create_app(Settings(model_dir=trained_model_dir, max_body_mb=0.01))
    answer = app.test_client().post("/predict", json=_predict_body(["hola " * 5000]))
    assert answer.status_code == 413 and "error" in answer.json


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").json
    assert client.get("/predict").status_code == 405


def test_webhook_ignores_other_actions_without_redis(client):
    # The session's REDIS_URL points at a closed port: actions that change no labels never touch Redis.
    answer = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert answer.status_code == 200 and answer.json["status"] == "ignored"
    assert client.post("/webhook", json={"no": "action"}).status_code == 400
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED", "annotation": "x"}).status_code == 400


def test_versions_lists_the_registry(client, v1):
    answer = client.get("/versions")
    assert answer.json["versions"] == [v1] and answer.json["current"] == v1
    (details,) = answer.json["details"]
    assert details["version"] == v1 and details["kind"] == "transformer"
    assert details["metric"] == "f1:xenófobo" and 0 <= details["score"] <= 1
    assert details["decision"].startswith("promoted transformer")
    assert answer.json["stop"]["stop"] is False and answer.json["stop"]["window"] == 3
    assert answer.json["stop"]["sentence"].startswith("Keep labeling")


def test_metrics_count_requests_and_predictions(client, v1):
    client.post("/predict", json=_predict_body(TWEETS[:2]))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ml_backend_requests_total{method="POST",route="/predict",status="200"}' in text
    assert f'ml_backend_predictions_total{{model_version="{v1}"}}' in text
    assert f'ml_backend_model_version{{model_version="{v1}"}} 1.0' in text
    assert "# TYPE ml_backend_kappa_previous gauge" in text and "# TYPE ml_backend_uncertain_share gauge" in text


def test_metrics_export_each_projects_kappa_and_uncertain_share(tmp_path):
    from backend.registry import Registry

    class Stub:
        kind = "stub"

        def save(self, folder):
            pass

    registry = Registry(tmp_path)
    registry.store("12", Stub(), {"kappa_previous": 0.97, "uncertain_share": 0.25})
    registry.store("13", Stub(), {"kappa_previous": None, "uncertain_share": 0.5})
    from backend import metrics

    text = metrics.render(registry)[0].decode()
    assert 'ml_backend_kappa_previous{project="12"} 0.97' in text
    assert 'ml_backend_uncertain_share{project="12"} 0.25' in text
    assert 'ml_backend_uncertain_share{project="13"} 0.5' in text and 'kappa_previous{project="13"}' not in text


LOGIN = ("u", "p")
LOGIN_SETTINGS = {"basic_auth_user": LOGIN[0], "basic_auth_pass": SecretStr(LOGIN[1])}


@pytest.fixture(scope="module")
def login_app(settings):
    """The backend with a login, as make run and compose start it."""
    return create_app(settings.model_copy(update=LOGIN_SETTINGS))


@pytest.mark.parametrize(
    "query", ["", "?project=", "?project=abc", "?project=0", "?project=1234567890123456789", "?project=²"]
)
def test_report_needs_a_project_id(login_app, query):
    answer = login_app.test_client().get(f"/report{query}", auth=LOGIN)
    assert answer.status_code == 400 and "project" in answer.json["error"]


def test_report_without_label_studio_credentials_says_so(login_app):
    answer = login_app.test_client().get("/report?project=1", auth=LOGIN)
    assert answer.status_code == 503 and "LABEL_STUDIO_API_KEY" in answer.json["error"]


def test_the_report_is_served_only_behind_a_login(client):
    """It showed any project's tweets and labels (read with the backend's token) to anyone who reached the port."""
    answer = client.get("/report?project=1")
    assert answer.status_code == 403 and "BASIC_AUTH_USER and BASIC_AUTH_PASS" in answer.json["error"]


def _label_studio(connections: dict[int, list[str]], asked: list[str]) -> Flask:
    """A stand-in for what the report reads of Label Studio: each project's ML connections (`connections`), its
    label config, and its tasks (none); `asked` records the paths."""
    studio = Flask("label-studio")

    @studio.before_request
    def _record():
        asked.append(request.path)

    @studio.get("/api/ml/")
    def ml():
        project = int(request.args["project"])
        urls = connections.get(project, [])
        return jsonify([{"id": i, "project": project, "url": url} for i, url in enumerate(urls)])

    @studio.get("/api/projects/<int:project>/")
    def project(project):
        return jsonify(id=project, label_config=LABEL_CONFIG)

    @studio.get("/api/tasks/")
    def tasks():
        return jsonify(tasks=[], total=0)

    return studio


def test_the_report_shows_only_projects_connected_to_this_backend(settings):
    """Any project the backend's Label Studio token could read was shown, connected to this backend or not. Which
    backend a connection reaches is told by its /health's instance id, as the worker tells it."""
    asked: list[str] = []
    connections: dict[int, list[str]] = {}
    with serving(_label_studio(connections, asked)) as studio_url:
        studio = {"label_studio_url": studio_url, "label_studio_api_key": SecretStr("t"), "label_studio_attempts": 1}
        with serving(create_app(settings.model_copy(update={**LOGIN_SETTINGS, **studio}))) as backend_url:
            gone = f"http://127.0.0.1:{free_port()}"  # another backend, not running
            connections.update({7: [gone, backend_url], 8: [gone], 9: []})
            for project in (8, 9, 404):
                asked.clear()
                answer = requests.get(f"{backend_url}/report", params={"project": project}, auth=LOGIN, timeout=30)
                assert answer.status_code == 404, answer.text
                assert f"project {project} is not connected to this backend" in answer.json()["error"]
                assert asked == ["/api/ml/"]  # nothing of its tasks read
            answer = requests.get(f"{backend_url}/report", params={"project": 7}, auth=LOGIN, timeout=60)
            assert answer.status_code == 200 and "learning report" in answer.text
            assert "/api/tasks/" in asked


def test_the_report_serves_plotly_itself(client):
    answer = client.get("/report/plotly.min.js")
    assert answer.status_code == 200 and answer.mimetype == "text/javascript"
    assert b"plotly" in answer.data[:2000].lower() and len(answer.data) > 1_000_000
    answer.close()


def test_basic_auth_on_all_routes_but_health_and_webhook(trained_model_dir):
    app = create_app(
        Settings(model_dir=trained_model_dir, basic_auth_user="u", basic_auth_pass="p", webhook_secret="s3cret")
    )
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={"schema": LABEL_CONFIG}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/report?project=1").status_code == client.get("/report/plotly.min.js").status_code == 401
    ok = client.post("/setup", json={"schema": LABEL_CONFIG}, auth=("u", "p"))
    assert ok.status_code == 200
    assert client.post("/setup", json={"schema": LABEL_CONFIG}, auth=("u", "wrong")).status_code == 401
    # Label Studio sends webhooks without basic auth; the optional secret header guards them instead.
    assert client.post("/webhook", json={"action": "X"}).status_code == 403
    assert client.post("/webhook", json={"action": "X"}, headers={"X-Webhook-Secret": "s3cret"}).status_code == 200


def test_secrets_with_any_unicode_compare_without_errors(trained_model_dir):
    """BASIC_AUTH_PASS=contraseña made every correct request a 500 (hmac.compare_digest on non-ASCII str)."""
    settings = Settings(
        model_dir=trained_model_dir, basic_auth_user="josé", basic_auth_pass="contraseña", webhook_secret="señal"
    )
    client = create_app(settings).test_client()
    headers = {"Authorization": "Basic " + base64.b64encode("josé:contraseña".encode()).decode()}
    assert client.get("/versions", headers=headers).status_code == 200
    wrong = {"Authorization": "Basic " + base64.b64encode("josé:contraseñá".encode()).decode()}
    assert client.get("/versions", headers=wrong).status_code == 401
    assert client.post("/webhook", json={"action": "X"}, headers={"X-Webhook-Secret": "senal"}).status_code == 403


def test_webhook_bodies_over_the_limit_are_refused_and_unknown_actions_are_one_label(client):
    from backend.api import MAX_WEBHOOK_BYTES

    # As large as an import's TASKS_CREATED: Label Studio sends the tasks with their data, 5,000 a request.
    tweets = [{"id": i, "data": {"text": "¿Y los migrantes? " * 15}, "meta": {}} for i in range(5000)]
    batch = json.dumps({"action": "PROJECT_UPDATED", "project": {"id": 9}, "tasks": tweets})
    assert 1024 * 1024 < len(batch) < MAX_WEBHOOK_BYTES
    assert client.post("/webhook", data=batch, content_type="application/json").status_code == 200
    big = json.dumps({"action": "X", "pad": "x" * MAX_WEBHOOK_BYTES})
    assert client.post("/webhook", data=big, content_type="application/json").status_code == 413
    for i in range(5):
        client.post("/webhook", json={"action": f"FORGED_{i}" * 100})
    text = client.get("/metrics").get_data(as_text=True)
    assert "FORGED" not in text and 'ml_backend_webhooks_total{action="other",decision="ignored"}' in text
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": "²", "annotations": 5})
    assert answer.status_code == 400


def test_untrained_base_model_answers_no_predictions(tmp_path):
    """Before any training the base model's head is random: no numbers presented as uncertainty."""
    app = create_app(Settings(model_dir=tmp_path))
    client = app.test_client()
    assert client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG}).json["model_version"] == "untrained"
    answer = client.post("/predict", json=_predict_body(TWEETS[:3]))
    assert answer.status_code == 200 and answer.json["results"] == [[], [], []]


def test_uncertainty_setting_changes_the_score(trained_model_dir, client):
    app = create_app(Settings(model_dir=trained_model_dir, uncertainty="least_confidence", inference_dtype="float32"))
    lc = app.test_client().post("/predict", json=_predict_body(TWEETS[:5])).json["results"]
    margin = client.post("/predict", json=_predict_body(TWEETS[:5])).json["results"]
    for a, b in zip(lc, margin, strict=True):
        # two classes: top probability = (1 + margin) / 2
        assert a["score"] == pytest.approx((1 + b["score"]) / 2, abs=1e-5)


def test_a_matching_classification_checkpoint_is_served_as_is(trained_model_dir, tmp_path, v1):
    """MODEL_NAME pointing at a fine-tuned checkpoint (like the notebook's checkpoint-5250), no MODEL_DIR versions."""
    checkpoint = trained_model_dir / "default" / "versions" / v1
    app = create_app(Settings(model_dir=tmp_path, model_name=str(checkpoint)))
    client = app.test_client()
    assert client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG}).json["model_version"] == v1
    results = client.post("/predict", json=_predict_body(TWEETS[:3])).json["results"]
    assert all(r["model_version"] == v1 and 0 <= r["score"] <= 1 for r in results)


def test_model_labels_names_generic_outputs_and_mismatch_gives_no_predictions(trained_model_dir, tmp_path, v1):
    checkpoint = trained_model_dir / "default" / "versions" / v1
    # Renaming the outputs to classes the project does not have: nothing may be presented as a prediction.
    app = create_app(Settings(model_dir=tmp_path, model_name=str(checkpoint), model_labels="pos,neg"))
    assert app.extensions["model_store"].get(None).labels == ("pos", "neg")
    assert app.test_client().post("/predict", json=_predict_body(TWEETS[:2])).json["results"] == [[], []]


@pytest.mark.parametrize(
    "secret, basic, headers, auth, status",
    [
        ("s3cret", None, {"X-Webhook-Secret": "s3cret"}, None, 200),  # Label Studio's webhook, as setup configures it
        ("s3cret", None, {}, ("label-studio", "s3cret"), 200),  # its Start Training, through the ML connection
        ("s3cret", None, {}, ("anyone", "guess"), 403),
        ("s3cret", None, {}, None, 403),
        ("", ("u", "p"), {}, ("u", "p"), 200),  # basic auth alone also guards /webhook now
        ("", ("u", "p"), {}, None, 403),
        ("", None, {}, None, 200),  # neither: open, with a warning at start
    ],
)
def test_webhook_authentication(trained_model_dir, secret, basic, headers, auth, status):
    user, password = basic or ("", "")
    app = create_app(
        Settings(model_dir=trained_model_dir, webhook_secret=secret, basic_auth_user=user, basic_auth_pass=password)
    )
    if auth:
        headers = {**headers, "Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
    answer = app.test_client().post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=headers)
    assert answer.status_code == status


def test_an_open_webhook_is_warned_of(trained_model_dir, caplog):
    with caplog.at_level("WARNING", logger="backend.api"):
        create_app(Settings(model_dir=trained_model_dir, webhook_secret="", basic_auth_user="", basic_auth_pass=""))
    assert any("accepts events from anyone" in r.getMessage() for r in caplog.records)


def test_more_tasks_than_max_tasks_is_413_naming_the_limit(trained_model_dir):
    client = create_app(Settings(model_dir=trained_model_dir, max_tasks=3)).test_client()
    answer = client.post("/predict", json=_predict_body(["a", "b", "c", "d"]))
    assert answer.status_code == 413 and "MAX_TASKS=3" in answer.json["error"]
    assert client.post("/predict", json=_predict_body(["a", "b", "c"])).status_code == 200


@pytest.mark.parametrize(
    "host, status",
    [
        ("localhost", 200),
        ("127.0.0.1:9090", 200),
        ("[::1]:9090", 200),
        ("ml-backend:9090", 200),  # compose's service name: how Label Studio and the worker reach it there
        ("LOCALHOST:9090", 200),
        ("rebind.attacker.example:9090", 400),  # a page whose name now points at 127.0.0.1 (DNS rebinding)
        ("localhost.attacker.example", 400),
        ("attacker.example@localhost", 400),
        ("", 400),
    ],
)
def test_only_the_allowed_host_names_are_answered(client, host, status):
    """The backend answered any Host, so a page of another site rebound to 127.0.0.1 could read its open routes
    from a browser on this machine."""
    for route in ("/health", "/versions", "/metrics"):
        answer = client.get(route, headers={"Host": host})
        assert answer.status_code == status, (route, host)
    if status == 400:
        assert "ALLOWED_HOSTS" in answer.json["error"]


def test_allowed_hosts_names_the_hosts_answered(trained_model_dir):
    client = create_app(Settings(model_dir=trained_model_dir, allowed_hosts="backend.lan, 10.0.0.5")).test_client()
    assert client.get("/health", headers={"Host": "backend.lan:9090"}).status_code == 200
    assert client.get("/health", headers={"Host": "10.0.0.5"}).status_code == 200
    assert client.get("/health", headers={"Host": "localhost"}).status_code == 400
