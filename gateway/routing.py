"""What the gateway does with a request once it is authenticated and within its limit. No Flask here.

predict: choose the version (the deployed one, or its canary by weight) -> the preprocessing service
validates and transforms the instances for exactly that version -> the model service predicts -> one
answer per instance. Upstream errors a client caused (4xx) and "not ready" (503) are passed on as the
upstream put them; anything else an upstream does wrong becomes 502, an unreachable one 503, a slow one
504 (see ``gateway.upstreams``). One deadline covers every hop of a request.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.batching import SOLO, Batcher, Entry
from gateway.upstreams import Response, Upstream, UpstreamBadResponse
from shared import artifacts
from shared.errors import Relayed
from shared.metrics import PREDICTIONS, labelled
from shared.service import BATCH_IDS_HEADER

#: Upstream statuses passed on to the client unchanged; anything else is the gateway's 502.
RELAYED_STATUSES = frozenset({400, 404, 405, 409, 413, 415, 422, 503})


def relay_or_raise(response: Response) -> Response:
    """Return a 2xx response; raise the client-visible error for anything else."""
    if 200 <= response.status < 300:
        return response
    if response.status in RELAYED_STATUSES:
        try:
            body = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        slug = str(body.get("type", "")).rsplit(":", 1)[-1] or "upstream-error"
        headers = {
            name: response.headers[name.lower()]
            for name in ("Retry-After", "Allow")
            if name.lower() in response.headers
        }
        raise Relayed(
            response.status,
            str(body.get("title") or "Upstream Error"),
            str(body.get("detail") or f"an upstream service answered {response.status}"),
            slug,
            body.get("errors") if isinstance(body.get("errors"), dict) else None,
            headers,
        )
    raise UpstreamBadResponse(f"an upstream service answered {response.status}")


@dataclass(frozen=True)
class Routing:
    """Which versions serve a model, as the model service reports it."""

    version: int
    canary_version: int | None
    canary_weight: float

    def choose(self) -> int:
        """The version for one request."""
        if self.canary_version is not None and random.uniform(0, 100) < self.canary_weight:  # noqa: S311
            return self.canary_version
        return self.version


class Router:
    """The gateway's routes, as plain methods over the two upstream clients."""

    def __init__(
        self,
        preprocessing: Upstream,
        model: Upstream,
        *,
        cache_seconds: float,
        review_threshold: float,
        batch_max_rows: int = 0,
        batch_inflight: int = 2,
    ) -> None:
        self.preprocessing = preprocessing
        self.model = model
        self.batcher = (
            Batcher(self.trip, max_rows=batch_max_rows, max_inflight=batch_inflight) if batch_max_rows > 0 else None
        )
        self.cache_seconds = cache_seconds
        self.review_threshold = review_threshold
        self._routing: dict[str, tuple[float, Routing]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _headers(request_id: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": "application/json", "X-Request-ID": request_id}

    def routing(self, name: str, request_id: str, deadline: float) -> Routing:
        """A model's routing, cached for ``cache_seconds`` per worker."""
        now = time.monotonic()
        with self._lock:
            cached = self._routing.get(name)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        response = relay_or_raise(
            self.model.request(
                "GET", f"/v1/models/{name}", body=None, headers=self._headers(request_id), deadline=deadline
            )
        )
        summary = response.json()
        deployed = summary.get("deployed") if isinstance(summary, dict) else None
        if not isinstance(deployed, dict) or not isinstance(deployed.get("version"), int):
            raise Relayed(
                503,
                "Service Unavailable",
                f"no version of model {name!r} is deployed",
                "model-not-ready",
                headers={"Retry-After": "5"},
            )
        canary = deployed.get("canary") or {}
        routing = Routing(
            version=int(deployed["version"]),
            canary_version=int(canary["version"]) if canary.get("version") is not None else None,
            canary_weight=float(canary.get("weight") or 0.0),
        )
        with self._lock:
            self._routing[name] = (now, routing)
        return routing

    def trip(
        self,
        name: str,
        version: int,
        body: bytes,
        request_id: str,
        deadline: float,
        batch_ids: list[str] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """One trip: the preprocessing service transforms the instances for ``version``, the model predicts.

        Returns the transform's parameters (instance ids, warnings) and the model's infer response. A shared
        trip lists every request's id in ``X-Batch-Request-IDs``, so each appears in the upstreams' logs.
        """
        headers = self._headers(request_id)
        if batch_ids and len(batch_ids) > 1:
            headers[BATCH_IDS_HEADER] = ",".join(batch_ids)
        transformed = relay_or_raise(
            self.preprocessing.request(
                "POST",
                f"/v1/models/{name}/versions/{version}/transform",
                body=body,
                headers=headers,
                deadline=deadline,
            )
        )
        inferred = relay_or_raise(
            self.model.request(
                "POST",
                f"/v2/models/{name}/versions/{version}/infer",
                body=transformed.body,
                headers=headers,
                deadline=deadline,
            )
        )
        result = inferred.json()
        # The model service echoes the request's instance ids and warnings: the transform's (large) body
        # goes through the gateway as bytes and is never parsed here.
        parameters = result.get("parameters", {}) if isinstance(result, dict) else {}
        return parameters, result

    def predict(
        self, name: str, raw_body: bytes, instances: list[Any] | None, request_id: str, deadline: float
    ) -> dict[str, Any]:
        """Run one predict request through preprocessing and the model; the contract's response body.

        ``instances`` (the parsed list, when the body is exactly ``{"instances": [...]}``) lets the request
        share a trip with concurrent ones for the same version; otherwise it travels alone.
        """
        artifacts.validate_name(name)
        version = self.routing(name, request_id, deadline).choose()
        outcome: Any = SOLO
        if self.batcher is not None and instances:
            outcome = self.batcher.submit(name, version, Entry(instances, raw_body, request_id, deadline))
        if outcome is SOLO:
            outcome = self.trip(name, version, raw_body, request_id, deadline)
        parameters, result = outcome
        try:
            return self._answer(name, version, request_id, parameters, result)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise UpstreamBadResponse("the model service's answer did not have the expected shape") from None

    def _answer(
        self, name: str, version: int, request_id: str, parameters: dict[str, Any], result: Any
    ) -> dict[str, Any]:
        try:
            outputs = {o["name"]: o for o in result["outputs"]}
        except (KeyError, TypeError):
            raise UpstreamBadResponse("the model service answered without outputs") from None
        ids = parameters.get("instance_ids") or []
        flagged = {
            int(w["instance"]) for w in parameters.get("warnings") or [] if isinstance(w, dict) and "instance" in w
        }
        warnings_by_row: dict[int, list[str]] = {}
        for warning in parameters.get("warnings") or []:
            if isinstance(warning, dict):
                warnings_by_row.setdefault(int(warning.get("instance", -1)), []).append(
                    f"{warning.get('field')}: {warning.get('message')}"
                )
        predictions: list[dict[str, Any]] = []
        if "label" in outputs:
            labels = outputs["label"]["data"]
            probabilities_tensor = outputs.get("probabilities")
            classes = (probabilities_tensor or {}).get("parameters", {}).get("classes") or []
            flat = (probabilities_tensor or {}).get("data") or []
            width = len(classes)
            for row, label in enumerate(labels):
                item: dict[str, Any] = {"prediction": label}
                if width:
                    values = flat[row * width : (row + 1) * width]
                    item["probabilities"] = {str(c): p for c, p in zip(classes, values, strict=True)}
                    item["confidence"] = max(values)
                    item["review_required"] = item["confidence"] < self.review_threshold or row in flagged
                else:
                    item["probabilities"] = None
                    item["confidence"] = None
                    item["review_required"] = row in flagged
                predictions.append(item)
        elif "prediction" in outputs:
            for row, value in enumerate(outputs["prediction"]["data"]):
                predictions.append(
                    {"prediction": value, "probabilities": None, "confidence": None, "review_required": row in flagged}
                )
        else:
            raise UpstreamBadResponse("the model service answered without a prediction output")
        for row, item in enumerate(predictions):
            if row < len(ids) and ids[row] is not None:
                predictions[row] = item = {"id": ids[row], **item}
            if row in warnings_by_row:
                item["warnings"] = warnings_by_row[row]
        flagged_count = sum(1 for item in predictions if item["review_required"])
        if flagged_count:
            labelled(PREDICTIONS, name, str(version), "true").inc(flagged_count)
        if len(predictions) > flagged_count:
            labelled(PREDICTIONS, name, str(version), "false").inc(len(predictions) - flagged_count)
        return {"model": name, "version": str(version), "request_id": request_id, "predictions": predictions}

    def models(self, request_id: str, deadline: float) -> dict[str, Any]:
        """Every model with its versions, routing and readiness."""
        response = relay_or_raise(
            self.model.request("GET", "/v1/models", body=None, headers=self._headers(request_id), deadline=deadline)
        )
        return dict(response.json())

    def describe(self, name: str, request_id: str, deadline: float) -> dict[str, Any]:
        """One model: versions, routing, metrics, the input schema and an example instance."""
        artifacts.validate_name(name)
        headers = self._headers(request_id)
        summary = relay_or_raise(
            self.model.request("GET", f"/v1/models/{name}", body=None, headers=headers, deadline=deadline)
        ).json()
        deployed = (summary.get("deployed") or {}).get("version")
        answer = {
            "name": name,
            "versions": summary.get("versions"),
            "deployed": summary.get("deployed"),
            "ready": summary.get("ready"),
        }
        metadata = summary.get("metadata") or {}
        for key in ("task", "classes", "metrics", "created", "runtime"):
            if key in metadata:
                answer[key] = metadata[key]
        if deployed is not None:
            schema = relay_or_raise(
                self.preprocessing.request(
                    "GET",
                    f"/v1/models/{name}/versions/{deployed}/schema",
                    body=None,
                    headers=headers,
                    deadline=deadline,
                )
            ).json()
            answer["input_schema"] = schema
            examples = schema.get("examples") or []
            answer["example"] = examples[0] if examples else None
        return answer

    def forward(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        body: bytes | None,
        request_id: str,
        deadline: float,
        idempotent: bool = True,
    ) -> Response:
        """Pass a request through to an upstream (the ``/v2`` protocol, admin operations)."""
        return relay_or_raise(
            upstream.request(
                method, path, body=body, headers=self._headers(request_id), deadline=deadline, idempotent=idempotent
            )
        )

    def forget(self, name: str) -> None:
        """Drop a model's cached routing (after an admin operation)."""
        with self._lock:
            self._routing.pop(name, None)
