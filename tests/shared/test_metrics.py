"""``/metrics``: counters labelled by route template, and gunicorn-style multiprocess aggregation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition text, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_requests_are_counted_by_route_template_not_raw_path(client: FlaskClient, service_name: str) -> None:
    for item in (1, 2, 3):
        assert client.get(f"/items/{item}").status_code == 200
    client.get("/no/such/route")
    client.get("/no/other/route")
    client.delete("/echo")
    found = scrape(client)
    total = "modelgate_http_requests_total"
    ours = {key: value for key, value in found.items() if ("service", service_name) in key[1]}
    assert ours[(total, labels(service=service_name, route="/items/<int:item_id>", method="GET", status="200"))] == 3
    assert ours[(total, labels(service=service_name, route="<unmatched>", method="GET", status="404"))] == 2
    # No rule matched a 405 either: unmatched requests share one label, so junk paths add no series.
    assert ours[(total, labels(service=service_name, route="<unmatched>", method="DELETE", status="405"))] == 1
    # Made-up methods share one label too.
    for method in ("BREW", "WHEN", "PROPFIND"):
        client.open("/echo", method=method)
    methods = {dict(key[1]).get("method") for key in scrape(client) if ("service", service_name) in key[1]}
    assert methods <= {"GET", "DELETE", "other", None}
    assert "other" in methods
    routes = {dict(key[1]).get("route") for key in ours}
    assert not any(route and route.startswith(("/items/1", "/items/2", "/no/")) for route in routes)
    count = ours[
        (
            "modelgate_http_request_duration_seconds_count",
            labels(service=service_name, route="/items/<int:item_id>", method="GET"),
        )
    ]
    assert count == 3


def test_metrics_scrapes_are_counted_too(client: FlaskClient, service_name: str) -> None:
    scrape(client)
    second = scrape(client)
    key = ("modelgate_http_requests_total", labels(service=service_name, route="/metrics", method="GET", status="200"))
    assert second[key] == 1  # the first scrape, counted after its response was rendered


def test_every_declared_metric_is_exposed(client: FlaskClient) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "modelgate_http_requests",
        "modelgate_http_request_duration_seconds",
        "modelgate_inference_duration_seconds",
        "modelgate_inference_rows",
        "modelgate_model_runtime_info",
        "modelgate_model_ready",
        "modelgate_model_load_failures",
    } <= families


WORKER = textwrap.dedent(
    """
    import sys
    from shared.metrics import HTTP_REQUESTS, INFERENCE_ROWS
    HTTP_REQUESTS.labels("model", "/v2/models/<name>/infer", "POST", "200").inc(int(sys.argv[1]))
    INFERENCE_ROWS.labels("iris", "1").inc(10)
    """
)
SCRAPER = "import sys; from shared.metrics import render_metrics; sys.stdout.write(render_metrics()[0].decode())"


def test_multiprocess_mode_adds_up_every_worker(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], env=env) for n in (2, 5)]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # one file per worker process

    scraped = subprocess.run(
        [sys.executable, "-c", SCRAPER], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    found = samples(scraped.stdout)
    key = labels(service="model", route="/v2/models/<name>/infer", method="POST", status="200")
    assert found[("modelgate_http_requests_total", key)] == 7
    assert found[("modelgate_inference_rows_total", labels(model="iris", version="1"))] == 20
