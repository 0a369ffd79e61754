"""``/health`` (liveness: the process answers) and ``/ready`` (readiness: it can do its job)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify


@dataclass(frozen=True)
class Check:
    """The outcome of one readiness check."""

    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ok else "failing"}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.data)
        return body


ReadinessProbe = Callable[[], dict[str, Check]]


def health_blueprint(service: str, readiness: ReadinessProbe) -> Blueprint:
    """Routes ``/health`` and ``/ready``; ``readiness`` returns named checks, all of which must pass."""
    bp = Blueprint("health", __name__)

    @bp.get("/health")
    def health() -> Response:
        return jsonify(status="ok", service=service)

    @bp.get("/ready")
    def ready() -> tuple[Response, int]:
        checks = readiness()
        ok = all(check.ok for check in checks.values())
        body = {
            "status": "ready" if ok else "not ready",
            "service": service,
            "checks": {name: check.as_dict() for name, check in checks.items()},
        }
        return jsonify(body), 200 if ok else 503

    return bp
