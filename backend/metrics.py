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
from prometheus_client.core import GaugeMetricFamily

from .registry import Registry

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
DEGRADED = Gauge(
    "ml_backend_degraded",
    "1 while a project is served by another version than the one its CURRENT names (that one is missing or does "
    "not load)",
    ["project"],
    multiprocess_mode="livemax",
)
MODEL_VERSION = Gauge(
    "ml_backend_model_version",
    "1 for the model version a worker serves",
    ["model_version"],
    multiprocess_mode="livemax",
)


class ProgressCollector:
    """Per project, what its serving version recorded when it was trained: kappa to the version before it and the
    share of unlabeled tasks in the uncertain band. Read from the registry at each scrape: the worker promotes
    versions, the server only reads them."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def collect(self):
        kappa = GaugeMetricFamily(
            "ml_backend_kappa_previous",
            "Cohen's kappa between the serving version's and the previous version's predicted labels on the "
            "unlabeled tasks (stopping criterion: stabilizing predictions)",
            labels=["project"],
        )
        share = GaugeMetricFamily(
            "ml_backend_uncertain_share",
            "Share of unlabeled tasks whose margin is at most UNCERTAIN_MARGIN, under the serving version",
            labels=["project"],
        )
        for scope in self.registry.scopes():
            current = self.registry.current(scope)
            meta = current.metadata if current else {}
            for family, key in ((kappa, "kappa_previous"), (share, "uncertain_share")):
                if isinstance(meta.get(key), int | float):
                    family.add_metric([scope], float(meta[key]))
        yield kappa
        yield share


def render(registry: Registry | None = None) -> tuple[bytes, str]:
    """The exposition text: the counters of every server process, and the registry's progress gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)
        body = generate_latest(counters)
    else:
        body = generate_latest()
    if registry is not None:
        progress = CollectorRegistry(auto_describe=True)
        progress.register(ProgressCollector(registry))
        body += generate_latest(progress)
    return body, CONTENT_TYPE_LATEST


def serving(version: str, previous: str | None) -> None:
    if previous and previous != version:
        MODEL_VERSION.labels(previous).set(0)
    MODEL_VERSION.labels(version).set(1)
