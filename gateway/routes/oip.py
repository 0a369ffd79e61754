"""``/v2/...``: the Open Inference Protocol, passed through to the model service with auth and limits."""

from __future__ import annotations

import re

from flask import Blueprint, Response, g, request

from gateway import gateway
from gateway.routes import deadline, guarded
from shared import artifacts
from shared.errors import NotFound, PayloadTooLarge
from shared.service import read_json, request_body

bp = Blueprint("oip", __name__)

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _checked_path(path: str) -> str:
    """The upstream path for ``/v2/<path>``: plain segments only, model names and versions validated."""
    segments = path.split("/") if path else []
    if any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        raise NotFound(f"no such route: /v2/{path[:200]}")
    if len(segments) >= 2 and segments[0] == "models":
        artifacts.validate_name(segments[1])
        if len(segments) >= 4 and segments[2] == "versions":
            artifacts.validate_version(segments[3])
    return "/v2" + ("/" + "/".join(segments) if segments else "")


@bp.get("/v2", defaults={"path": ""})
@bp.get("/v2/<path:path>")
@bp.post("/v2/<path:path>")
@guarded("predict")
def passthrough(path: str) -> Response:
    """Forward one protocol request to the model service and return its answer as it is."""
    target = _checked_path(path)
    state = gateway()
    body: bytes | None = None
    if request.method == "POST":
        parsed = read_json()
        inputs = parsed.get("inputs") if isinstance(parsed, dict) else None
        # Only a list is checked here; anything else is the model service's to refuse (400), never a 500 here.
        for tensor in inputs if isinstance(inputs, list) else []:
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            rows = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else 0
            if rows > state.settings.max_batch_rows:
                raise PayloadTooLarge(f"{rows} rows exceed the limit of {state.settings.max_batch_rows}")
        body = request_body()
    answer = state.router.forward(state.router.model, request.method, target, body, g.request_id, deadline())
    return Response(
        answer.body, status=answer.status, content_type=answer.headers.get("content-type", "application/json")
    )
