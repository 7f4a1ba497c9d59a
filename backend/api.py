"""The ML backend protocol as Label Studio 1.23 calls it: a thin HTTP layer over the model store.

Routes only parse the request and delegate; the scoring and the answer's shape live in predictions.py.
/health and /setup never load a model, so they answer in milliseconds. Errors become HTTP statuses here only.
"""

from __future__ import annotations

import hmac
import logging
import re
import time

from flask import Flask, Response, g, jsonify, request, send_file
from redis.exceptions import AuthenticationError, RedisError
from werkzeug.exceptions import HTTPException

from . import metrics, predictions, report
from .errors import (
    BackendError,
    BadRequest,
    LabelConfigError,
    LabelStudioUnavailable,
    NoTrainedModel,
    UnknownProject,
)
from .labelstudio.label_config import parse_label_config
from .labelstudio.project_setup import WEBHOOK_HEADER
from .model_store import ModelStore
from .registry import PROJECT_ID, scope_of
from .retraining.policy import (
    ANNOTATION_ACTIONS,
    DELETE_ACTION,
    IMPORT_ACTION,
    MAX_DELETED_IDS,
    TRAIN_ACTION,
    RetrainPolicy,
    connect,
)
from .settings import Settings

log = logging.getLogger(__name__)

# Routes Label Studio reaches without credentials (it sends webhooks without basic auth).
OPEN_ROUTES = {"health", "webhook"}
# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then an optional port.
HOST = re.compile(r"(?P<name>[a-z0-9.-]{1,253}|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?")
# Label Studio's webhook bodies: an annotation and its task (kilobytes), or the tasks of an import, sent in batches
# of its WEBHOOK_BATCH_SIZE (5,000 tasks with their data: megabytes). Anything larger is not one.
MAX_WEBHOOK_BYTES = 32 * 1024 * 1024
# The errors a request can cause and their statuses; any other error is ours: 500, traceback in the log.
STATUS: dict[type[BackendError], int] = {
    UnknownProject: 404,
    LabelConfigError: 422,
    BadRequest: 400,
    NoTrainedModel: 409,
    LabelStudioUnavailable: 503,
}


def create_app(
    settings: Settings | None = None, store: ModelStore | None = None, policy: RetrainPolicy | None = None
) -> Flask:
    settings = settings or Settings()
    store = store or ModelStore(settings)
    # Connects on first use; fails fast so that /webhook answers within Label Studio's 1 s.
    policy = policy or RetrainPolicy.from_settings(settings, connect(settings, fail_fast=True))
    store.warm_up()  # load at start, never on the first request
    if not settings.secret and not settings.basic_auth:
        log.warning(
            "WEBHOOK_SECRET and BASIC_AUTH_USER are unset: /webhook accepts events from anyone who reaches this "
            "port (make run and docker compose set a secret; SECURITY.md)"
        )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_body_mb * 1024 * 1024)
    app.extensions["model_store"] = store
    serving: dict[str, str | None] = {"version": None}

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        if not _host_allowed(request.headers.get("Host", ""), settings.host_names):
            # A browser sends the name it was given: a page that points its own name at this machine (DNS
            # rebinding) would otherwise read the routes that need no login.
            return _error("this backend answers only to the host names in ALLOWED_HOSTS", 400)
        if request.endpoint == "webhook":
            request.max_content_length = MAX_WEBHOOK_BYTES
        if settings.basic_auth and request.endpoint not in OPEN_ROUTES:
            auth = request.authorization
            given = (auth.username or "", auth.password or "") if auth and auth.type == "basic" else ("", "")
            if not all(_same(a, b) for a, b in zip(given, settings.basic_auth, strict=True)):
                return _error("authentication required", 401, {"WWW-Authenticate": 'Basic realm="ml-backend"'})

    @app.after_request
    def _record(resp: Response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, request.method, str(resp.status_code)).inc()
        metrics.LATENCY.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return resp

    @app.errorhandler(Exception)
    def _handle(exc: Exception):
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), None)
        if status is not None:
            return _error(str(exc), status)
        if isinstance(exc, HTTPException):
            return _error(exc.description or exc.name, exc.code or 500)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal error: see the backend's log", 500)

    @app.get("/")
    @app.get("/health")
    def health():
        # Label Studio takes any 2xx JSON as healthy: DEGRADED keeps the connection and tells a person why.
        # `instance` tells the worker that the backend a project is connected to is this one (not_connected).
        try:
            instance = store.registry.instance
        except (OSError, ValueError) as exc:  # a read-only MODEL_DIR the worker has not written to yet
            log.warning("no instance id: %s", exc)
            instance = None
        if store.recheck():
            return jsonify(status="DEGRADED", degraded=store.degraded, model_class="Classifier", instance=instance)
        return jsonify(status="UP", model_class="Classifier", uncertainty=settings.uncertainty, instance=instance)

    @app.post("/setup")
    def setup():
        body = _json_body()
        parse_label_config(body.get("schema") or "")
        return jsonify(model_version=store.version_for(_project(body)))

    @app.post("/predict")
    def predict():
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("the body needs `tasks`: a list of Label Studio tasks")
        if len(tasks) > settings.max_tasks:
            return _error(
                f"{len(tasks)} tasks in one request; this backend scores at most MAX_TASKS={settings.max_tasks} "
                "at a time (Label Studio sends every selected task at once: select fewer)",
                413,
            )
        config = parse_label_config(body.get("label_config") or "")
        classifier = store.get(_project(body))
        if serving["version"] != classifier.version:
            metrics.serving(classifier.version, serving["version"])
            serving["version"] = classifier.version
        results = predictions.predict_tasks(
            classifier, config, tasks, strategy=settings.uncertainty, max_chars=settings.max_text_chars
        )
        served = sum(1 for r in results if r is not predictions.NO_PREDICTION)
        metrics.PREDICTIONS.labels(classifier.version).inc(served)
        metrics.TASKS_WITHOUT_PREDICTION.inc(len(results) - served)
        return jsonify(predictions.answer(results, classifier.version))

    @app.post("/webhook")
    def webhook():
        if not _webhook_allowed(settings):
            return _error(
                f"webhook refused: wrong or missing {WEBHOOK_HEADER} header (or basic auth); setup-project "
                "configures Label Studio to send it",
                403,
            )
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("a webhook body needs `action`")
        if action not in ANNOTATION_ACTIONS and action not in (TRAIN_ACTION, IMPORT_ACTION, DELETE_ACTION):
            # Only known actions become metric labels: a label per forged action string would grow /metrics.
            metrics.WEBHOOKS.labels("other", "ignored").inc()
            return jsonify(status="ignored", action=action[:100])
        project = _webhook_project(body)
        annotations = body.get("annotations")  # ANNOTATIONS_CREATED/DELETED carry a list
        count = min(len(annotations), 1000) if isinstance(annotations, list) and annotations else 1
        tasks = body.get("tasks") if action == DELETE_ACTION else None  # TASKS_DELETED: [{"id": ...}]
        task_ids = [
            t["id"]
            for t in (tasks[:MAX_DELETED_IDS] if isinstance(tasks, list) else [])
            if isinstance(t, dict) and isinstance(t.get("id"), int) and not isinstance(t["id"], bool) and t["id"] > 0
        ]
        try:
            decision, job = policy.on_event(project, action, count, task_ids)
        except AuthenticationError as exc:
            log.error(
                "webhook %s for project %s not queued, Redis refused REDIS_URL's password: %s", action, project, exc
            )
            return _error("Redis refused the password in REDIS_URL: the event was not queued", 503)
        except RedisError as exc:
            log.error("webhook %s for project %s not queued, Redis unreachable: %s", action, project, exc)
            return _error(
                "Redis (REDIS_URL) is unreachable: the event was not queued; the next annotation "
                "or Start Training catches up",
                503,
            )
        metrics.WEBHOOKS.labels(action, decision.value).inc()
        answer = {"status": decision.value, "action": action, "project": project}
        return jsonify({**answer, "job": job} if job else answer)

    @app.get("/versions")
    def versions():
        scope = _project({"project": request.args.get("project")})
        versions = store.registry.versions(scope)
        history = store.registry.history(scope)
        return jsonify(
            versions=[v.name for v in versions],
            current=store.version_for(scope),
            details=[v.summary() for v in versions],
            stop=settings.stop_rule.judge(history).as_dict(),
        )

    @app.get("/report")
    def project_report():
        if not settings.basic_auth:
            # It shows a project's tweets and labels, read with the backend's Label Studio token.
            return _error(
                "the report is served only behind a login: set BASIC_AUTH_USER and BASIC_AUTH_PASS (make run and "
                "docker compose do), or write it to a file with `python -m backend report`",
                403,
            )
        project = request.args.get("project", "")
        if not (PROJECT_ID.fullmatch(project) and int(project) > 0):
            raise BadRequest("/report needs `project`: a Label Studio project id, e.g. /report?project=1")
        gathered = report.gather(int(project), settings, store, served_only=True)
        page = report.render(gathered, plotly_src="report/plotly.min.js")
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/report/plotly.min.js")
    def plotly_js():
        # The report works where no CDN can be reached: the plotly package ships its JavaScript.
        return send_file(report.PLOTLY_JS, mimetype="text/javascript", max_age=86400)

    @app.get("/metrics")
    def prometheus():
        body, content_type = metrics.render(store.registry)
        return Response(body, content_type=content_type)

    return app


def _webhook_allowed(settings: Settings) -> bool:
    """Label Studio's annotation webhooks carry the secret header (setup-project configures them); its "Start
    Training" carries the ML connection's basic auth: the backend's own, or any user with the secret as password.
    Open only when the backend has neither a secret nor basic auth (create_app warns of it)."""
    if not settings.secret and not settings.basic_auth:
        return True
    if settings.secret and _same(request.headers.get(WEBHOOK_HEADER, ""), settings.secret):
        return True
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    given = (auth.username or "", auth.password or "")
    if settings.basic_auth and all(_same(a, b) for a, b in zip(given, settings.basic_auth, strict=True)):
        return True
    return bool(settings.secret) and _same(given[1], settings.secret)


def _host_allowed(host: str, names: frozenset[str]) -> bool:
    """Whether a Host header ("name", "name:port", "[::1]:port") names one of `names`."""
    match = HOST.fullmatch(host.lower())
    return match is not None and match["name"].strip("[]") in names


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of secrets, as bytes: any Unicode in either side compares, none raises."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def _json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # JSON nested thousands deep
        raise BadRequest("the request body is nested too deep") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object (Content-Type: application/json)")
    return body


def _project(body: dict) -> str:
    try:
        return scope_of(body.get("project"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _webhook_project(body: dict) -> int:
    """The project id: `project.id`, else the annotation's or the task's `project`."""
    nested = [body.get(key) for key in ("annotation", "task")]
    candidates = [body.get("project")] + [part.get("project") for part in nested if isinstance(part, dict)]
    for candidate in candidates:
        value = candidate.get("id") if isinstance(candidate, dict) else candidate
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**18:
            return value
        if isinstance(value, str) and PROJECT_ID.fullmatch(value) and int(value) > 0:
            return int(value)
    raise BadRequest("the webhook names no project (`project.id`)")


def _error(message: str, status: int, headers: dict | None = None):
    return jsonify(error=message, status=status), status, headers or {}
