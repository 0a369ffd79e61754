"""Every Prometheus metric modelgate exports, declared once, and the ``/metrics`` view.

Under gunicorn the config file points ``PROMETHEUS_MULTIPROC_DIR`` at a per-service folder before any
worker imports this module, so each worker writes its samples to files there and ``/metrics`` (served by
whichever worker answers) adds up every live and exited worker.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)


@functools.lru_cache(maxsize=4096)
def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per process: ``labels()`` validates its arguments and takes
    a lock on every call, a few percent of a busy worker's CPU on the request path (profiled). Only for
    labels drawn from a small, fixed set (route templates, statuses, upstream and deployed model names).
    The cache is built after gunicorn forks, in each worker."""
    return metric.labels(*values)


#: Request latency buckets, in seconds: fine below 10 ms where the services live, coarse above.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "modelgate_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "modelgate_http_request_duration_seconds",
    "Time from request received to response returned, by service and route template.",
    ["service", "route", "method"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_LATENCY = Histogram(
    "modelgate_inference_duration_seconds",
    "Time spent in the model runtime for one inference call (one request, any number of rows).",
    ["model", "version", "runtime"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_ROWS = Counter(
    "modelgate_inference_rows_total",
    "Rows predicted, by model version.",
    ["model", "version"],
)
MODEL_RUNTIME = Gauge(
    "modelgate_model_runtime_info",
    "1 for the runtime (onnx or sklearn) that serves each loaded model version.",
    ["model", "version", "runtime"],
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "modelgate_model_ready",
    "1 while a deployed model version is loaded and verified in a worker, 0 when it failed to load.",
    ["model", "version"],
    multiprocess_mode="livemin",
)
MODEL_LOAD_FAILURES = Counter(
    "modelgate_model_load_failures_total",
    "Model versions that could not be loaded, by reason (the ArtifactError class, or load).",
    ["model", "version", "reason"],
)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text for this process, or for every worker under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- preprocessing --------------------------------------------------------------------------------

PREPROCESS_ROWS = Counter(
    "modelgate_preprocess_rows_total",
    "Instances validated and transformed, by model version.",
    ["model", "version"],
)
PREPROCESS_REJECTED = Counter(
    "modelgate_preprocess_rejected_total",
    "Transform requests refused with 422 because instances broke the feature contract.",
    ["model", "version"],
)
OUT_OF_RANGE = Counter(
    "modelgate_feature_out_of_range_total",
    "Values outside the range observed in training (accepted, reported as warnings), by feature.",
    ["model", "version", "feature"],
)
FEATURE_VALUES = Counter(
    "modelgate_feature_values_total",
    "Values accepted per feature, by the training reference bin they fall in (decile 0-9 for a number, the "
    "value for a number with few values or a category, 'other' for a number never seen in training); "
    "modelgate_feature_drift_psi is computed from these by a recording rule.",
    ["model", "version", "feature", "bin"],
)
FEATURE_REFERENCE = Gauge(
    "modelgate_feature_reference_fraction",
    "Share of the training values in each reference bin of a feature (what live traffic is compared with).",
    ["model", "version", "feature", "bin"],
    multiprocess_mode="max",  # fixed per version: a value from an exited worker is still right
)
TRANSFORM_LATENCY = Histogram(
    "modelgate_transform_duration_seconds",
    "Time to validate and transform one request, by model version and transform path.",
    ["model", "version", "path"],
    buckets=LATENCY_BUCKETS,
)

# --- gateway --------------------------------------------------------------------------------------

RATE_LIMIT_DECISIONS = Counter(
    "modelgate_ratelimit_decisions_total",
    "Rate-limit decisions: allowed, limited, fallback_allowed, fallback_limited (Redis away), unavailable.",
    ["decision"],
)
RATE_LIMIT_STORE_ERRORS = Counter(
    "modelgate_ratelimit_store_errors_total",
    "Redis calls of the rate limiter that failed or timed out.",
)
RATE_LIMIT_STORE_UP = Gauge(
    "modelgate_ratelimit_store_up",
    "1 while the rate-limit store (Redis) answers, 0 while the gateway runs on its fallback.",
    multiprocess_mode="livemin",
)
UPSTREAM_REQUESTS = Counter(
    "modelgate_upstream_requests_total",
    "Calls to an upstream service, by upstream and outcome (HTTP status class, timeout, unavailable).",
    ["upstream", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "modelgate_upstream_duration_seconds",
    "Time of one call to an upstream service (the stage of a request), by upstream.",
    ["upstream"],
    buckets=LATENCY_BUCKETS,
)
CIRCUIT_OPEN = Gauge(
    "modelgate_circuit_open",
    "1 while an upstream's circuit breaker is open (requests fail fast with 503).",
    ["upstream"],
    multiprocess_mode="livemax",
)
PREDICTIONS = Counter(
    "modelgate_predictions_total",
    "Instances predicted through the gateway, by model version and whether review was flagged.",
    ["model", "version", "review_required"],
)
BATCH_SIZE = Histogram(
    "modelgate_gateway_batch_requests",
    "Predict requests carried by one trip through the upstreams (adaptive batching in the gateway).",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
