"""Prometheus metrics for /metrics.

Under gunicorn every worker is a process of its own: the server sets PROMETHEUS_MULTIPROC_DIR before the
workers start, and /metrics then adds up what all of them recorded.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("ml_backend_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "ml_backend_request_seconds",
    "Time to answer a request",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 100),
)
PREDICTIONS = Counter("ml_backend_predictions_total", "Pre-annotations served", ["model_version"])
TASKS_WITHOUT_PREDICTION = Counter("ml_backend_tasks_without_prediction_total", "Tasks answered with an empty slot")
WEBHOOKS = Counter("ml_backend_webhooks_total", "Webhook events and what the loop decided", ["action", "decision"])
MODEL_VERSION = Gauge(
    "ml_backend_model_version",
    "1 for the model version a worker serves",
    ["model_version"],
    multiprocess_mode="livemax",
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def serving(version: str, previous: str | None) -> None:
    if previous and previous != version:
        MODEL_VERSION.labels(previous).set(0)
    MODEL_VERSION.labels(version).set(1)
