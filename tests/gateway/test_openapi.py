"""``/openapi.json`` is a valid document covering every public route; ``/docs/`` works offline."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from flask import Flask
from openapi_spec_validator import validate

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def test_openapi_document_is_valid(app: Flask) -> None:
    response = app.test_client().get("/openapi.json")

    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_v1_and_v2_route_is_documented(app: Flask) -> None:
    spec = app.test_client().get("/openapi.json").get_json()
    documented = {(path, method) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS}

    missing = []
    catch_all = False
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/v1", "/v2")):
            continue
        if rule.rule in ("/v2", "/v2/<path:path>"):
            catch_all = True  # the Open Inference Protocol passthrough: documented by its infer route
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if (path, method.lower()) not in documented:
                missing.append(f"{method} {path}")

    assert missing == []
    assert catch_all
    assert any(path.startswith("/v2/") for path, _ in documented)


def test_protected_operations_declare_bearer_security(app: Flask) -> None:
    spec = app.test_client().get("/openapi.json").get_json()

    for path, item in spec["paths"].items():
        if not path.startswith(("/v1", "/v2")):
            continue
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            if path == "/v1/auth/token":
                assert "security" not in operation
            else:
                assert operation["security"] == [{"bearer": []}], f"{method} {path}"


class _Assets(HTMLParser):
    """Collects every ``src`` and ``href`` of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.references.append(value)


@pytest.mark.parametrize("base_url", ["http://localhost", "http://gateway.internal:8000"])
def test_docs_are_served_entirely_by_the_gateway(app: Flask, base_url: str) -> None:
    client = app.test_client()
    assert client.get("/docs", base_url=base_url).status_code in (301, 308)

    page = client.get("/docs/", base_url=base_url)

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    parser = _Assets()
    parser.feed(html)
    scripts_and_styles = [r for r in parser.references if r.endswith((".js", ".css"))]
    assert len(scripts_and_styles) >= 3  # Swagger UI's bundle, its preset and its stylesheet
    for reference in parser.references:
        assert reference.startswith("/docs/"), reference
        with client.get(reference, base_url=base_url) as asset:  # a file response: close it
            assert asset.status_code == 200, reference
            assert len(asset.get_data()) > 0, reference
    own_host = urlsplit(base_url).netloc
    for url in re.findall(r"https?://[^\s\"'<>)]+", html):
        assert urlsplit(url).netloc == own_host, url  # no CDN, no online validator
    assert '"/openapi.json"' in html
