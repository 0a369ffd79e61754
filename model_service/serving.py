"""The models one worker serves: loading, readiness, version resolution and Open Inference Protocol infer.

Each gunicorn worker owns a ``ModelServer``. ``start`` loads every deployed version in a background
thread (``/ready`` says 503 until that first pass is over) and then re-reads the deployment records every
``REGISTRY_REFRESH_SECONDS``, so a new deployment serves without a restart. A version that fails
verification is reported on readiness and never served; the other models keep serving. No Flask here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from model_service.config import ModelServiceSettings
from model_service.deployments import Deployment
from model_service.registry import LoadedModel, Registry
from shared import artifacts
from shared.errors import (
    ArtifactError,
    ContractMismatch,
    InferenceInputError,
    InvalidName,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    UnprocessableEntity,
)
from shared.health import Check
from shared.metrics import (
    INFERENCE_LATENCY,
    INFERENCE_ROWS,
    MODEL_LOAD_FAILURES,
    MODEL_READY,
    MODEL_RUNTIME,
    labelled,
)
from shared.oip import InferRequest, encode_tensor, parse_infer_request

log = logging.getLogger(__name__)

#: Name of the single input tensor that carries already-transformed features (from the preprocessing
#: service); it must come with ``parameters.contract_fingerprint`` of the version that will run.
PREPROCESSED_INPUT = "preprocessed"
#: Request parameters copied into the infer response.
ECHOED_PARAMETERS = ("instance_ids", "warnings")
#: Longest a request waits for the worker's first load pass before it is answered 503.
STARTUP_WAIT_SECONDS = 15.0
#: Seconds before a version that failed to load is tried again.
RETRY_FAILED_AFTER = 30.0
#: Most seconds a stopping worker waits for a load in progress (less if gunicorn's timeouts are shorter).
STOP_WAIT_SECONDS = 10.0

_NUMERIC = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
_ACCEPTS = {
    "number": _NUMERIC,
    "integer": _NUMERIC,
    "boolean": {"BOOL"},
    "category": {"BYTES"},
    "string": {"BYTES"},
}
_METADATA_DATATYPE = {
    "number": "FP64",
    "integer": "INT64",
    "boolean": "BOOL",
    "category": "BYTES",
    "string": "BYTES",
}


class ModelServer:
    """Loaded model versions of one process, with their deployments."""

    def __init__(
        self,
        registry: Registry,
        *,
        use_onnx: bool,
        onnx_threads: int,
        refresh_seconds: float,
        max_rows: int,
        extra_versions: int = 4,
    ):
        self.registry = registry
        self.use_onnx = use_onnx
        self.onnx_threads = onnx_threads
        self.refresh_seconds = refresh_seconds
        self.max_rows = max_rows
        #: Versions kept loaded besides the deployed ones (loaded on demand when asked for by number).
        self.extra_versions = extra_versions
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._failures: dict[tuple[str, int], tuple[str, float]] = {}
        self._deployments: dict[str, Deployment] = {}
        self._incoming: dict[str, Deployment] = {}
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._lock = threading.RLock()
        self._loaded_once = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: ModelServiceSettings) -> ModelServer:
        """A server over ``MODEL_REGISTRY`` with the settings' runtime choices."""
        return cls(
            Registry(settings.model_registry, settings.signing_key()),
            use_onnx=settings.model_use_onnx,
            onnx_threads=settings.onnx_threads,
            refresh_seconds=settings.registry_refresh_seconds,
            max_rows=settings.max_batch_rows,
            extra_versions=settings.model_extra_versions,
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Load the deployed versions, in a daemon thread (then keep refreshing) or right here."""
        if not background:
            self.sync()
            if self.refresh_seconds <= 0:
                return
        self._thread = threading.Thread(target=self._run, args=(not background,), name="model-loader", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stop the refresh thread; with ``wait``, give a load in progress up to that many seconds to end.

        A worker calls it with a wait before it exits (gunicorn's ``worker_exit`` hook): a process must not
        exit while the loader is inside onnxruntime, which builds a session in C++ without the GIL; the
        runtime torn down under it aborts the process ("terminate called without an active exception",
        seen 3 times in 150 workers stopped a few seconds after they booted).
        """
        self._stop.set()
        thread = self._thread
        if wait > 0 and thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first load pass is over."""
        return self._loaded_once.wait(timeout)

    def _run(self, synced: bool = False) -> None:
        if synced and (self.refresh_seconds <= 0 or self._stop.wait(self.refresh_seconds)):
            return
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("registry sync failed")
                self._loaded_once.set()
            if self.refresh_seconds <= 0 or self._stop.wait(self.refresh_seconds):
                return

    def sync(self) -> None:
        """Read every deployment record and load the versions it routes to."""
        deployments: dict[str, Deployment] = {}
        for name in self.registry.models():
            try:
                record = self.registry.deployment(name)
            except ArtifactError as exc:
                log.error("deployment unreadable", extra={"model": name, "reason": exc.detail})
                continue
            if record is None:
                continue
            try:
                deployments[name] = Deployment.from_record(record)
            except (KeyError, TypeError, ValueError, InvalidName):
                log.error("deployment invalid", extra={"model": name})
                continue
        # Load first, then switch: requests keep their old routing until the new versions are in memory.
        with self._lock:
            self._incoming = deployments
        for name, deployment in deployments.items():
            for version in deployment.versions():
                if self._stop.is_set():  # stopping: the versions not loaded yet are not needed any more
                    return
                self._ensure_loaded(name, version, retry=True)
        with self._lock:
            self._deployments = deployments
            self._incoming = {}
        self._loaded_once.set()

    def _ensure_loaded(self, name: str, version: int, *, retry: bool) -> LoadedModel | None:
        key = (name, version)
        model = self._models.get(key)  # the hot path: a dict read, no lock
        if model is not None:
            return model
        with self._lock:
            failure = self._failures.get(key)
            if failure and (not retry or time.monotonic() - failure[1] < RETRY_FAILED_AFTER):
                return None
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Loading takes seconds; only requests for this very version wait for it, never the others.
        with key_lock:
            model = self._models.get(key)
            if model is not None:
                return model
            try:
                model = self.registry.load(name, version, use_onnx=self.use_onnx, onnx_threads=self.onnx_threads)
            except ModelNotFound:
                raise
            except ArtifactError as exc:
                self._record_failure(key, exc.detail, type(exc).__name__)
                log.error("model refused", extra={"model": name, "version": version, "reason": exc.detail})
                return None
            except Exception as exc:
                self._record_failure(key, f"load failed: {type(exc).__name__}", "load")
                log.exception("model load failed", extra={"model": name, "version": version})
                return None
            with self._lock:
                self._failures.pop(key, None)
                self._models[key] = model
                evicted = self._evict_extra_versions(keep=key)
            for gone in evicted:
                MODEL_RUNTIME.labels(gone.name, str(gone.version), gone.runtime.name).set(0)
                log.info("model unloaded", extra={"model": gone.name, "version": gone.version})
            MODEL_RUNTIME.labels(name, str(version), model.runtime.name).set(1)
            MODEL_READY.labels(name, str(version)).set(1)
            return model

    def _evict_extra_versions(self, keep: tuple[str, int]) -> list[LoadedModel]:
        """Unload the least recently loaded versions beyond ``extra_versions`` that no deployment routes to
        (asked for by number, e.g. to compare or before a rollback). Caller holds the lock."""
        routed = [*self._deployments.items(), *self._incoming.items()]
        deployed = {(name, v) for name, d in routed for v in d.versions()}
        extra = [key for key in self._models if key not in deployed and key != keep]
        doomed = extra[: max(0, len(extra) + 1 - self.extra_versions)] if keep not in deployed else []
        return [self._models.pop(key) for key in doomed]

    def state(self, name: str, version: str | int) -> str:
        """``loaded``, ``failed`` or ``not loaded`` for an existing version, without loading it (404 if absent)."""
        key = (artifacts.validate_name(name), artifacts.validate_version(version))
        with self._lock:
            if key in self._models:
                return "loaded"
            if key in self._failures:
                return "failed"
        self.registry.metadata(*key)  # 404 for an unknown model or version
        return "not loaded"

    def _record_failure(self, key: tuple[str, int], reason: str, kind: str) -> None:
        with self._lock:
            self._failures[key] = (reason, time.monotonic())
        MODEL_LOAD_FAILURES.labels(key[0], str(key[1]), kind).inc()
        MODEL_READY.labels(key[0], str(key[1])).set(0)

    # --- lookups -----------------------------------------------------------------------------------

    def deployment(self, name: str) -> Deployment | None:
        """The deployment this worker last read for ``name`` (waiting for the first read if need be)."""
        if not self._loaded_once.is_set():
            self._loaded_once.wait(STARTUP_WAIT_SECONDS)
        with self._lock:
            return self._deployments.get(name)

    def resolve(self, name: str, version: str | int | None = None) -> LoadedModel:
        """The loaded version that answers a request: ``version``, or the deployment's choice."""
        artifacts.validate_name(name)
        if not self._loaded_once.is_set():
            # A worker that has just started may get a request before its first load pass is over (its
            # sibling answered the readiness probe): wait for it rather than turn the request away.
            self._loaded_once.wait(STARTUP_WAIT_SECONDS)
        if version is None:
            deployment = self.deployment(name)
            if deployment is None:
                if name in self.registry.models():
                    raise ModelNotReady(
                        name, "-", "no version is deployed" if self._loaded_once.is_set() else "loading"
                    )
                raise ModelNotFound(name)
            chosen = deployment.choose()
        else:
            chosen = artifacts.validate_version(version)
        model = self._ensure_loaded(name, chosen, retry=False)
        if model is None:
            with self._lock:
                failure = self._failures.get((name, chosen))
            raise ModelNotReady(name, chosen, failure[0] if failure else "loading")
        return model

    def is_ready(self, name: str, version: str | int | None = None) -> bool:
        """Whether ``name`` (at ``version``, or its deployed version) is loaded and verified here."""
        artifacts.validate_name(name)
        with self._lock:
            if version is None:
                deployment = self._deployments.get(name)
                if deployment is None:
                    return False
                return all((name, v) in self._models for v in deployment.versions())
            return (name, artifacts.validate_version(version)) in self._models

    def loaded(self) -> list[LoadedModel]:
        """Every version loaded in this worker."""
        with self._lock:
            return list(self._models.values())

    def readiness(self) -> dict[str, Check]:
        """Readiness checks: the registry folder, and the first load pass with any failures or warnings."""
        checks = {"registry": Check(self.registry.root.is_dir(), "" if self.registry.root.is_dir() else "missing")}
        with self._lock:
            failures = {f"{n}/{v}": reason for (n, v), (reason, _) in self._failures.items()}
            warnings = {f"{m.name}/{m.version}": m.warnings for m in self._models.values() if m.warnings}
            loaded = sorted(f"{n}/{v}" for n, v in self._models)
        data: dict[str, Any] = {"loaded": loaded}
        if failures:
            data["failed"] = failures
        if warnings:
            data["warnings"] = warnings
        if not self._loaded_once.is_set():
            checks["models"] = Check(False, "loading the deployed versions", data)
        else:
            checks["models"] = Check(True, "", data)
        return checks

    # --- the protocol ------------------------------------------------------------------------------

    def model_metadata(self, model: LoadedModel) -> dict[str, Any]:
        """The protocol's model metadata: raw features as inputs, predictions as outputs."""
        inputs = [
            {"name": f["name"], "datatype": _METADATA_DATATYPE[f["type"]], "shape": [-1]}
            for f in model.contract["features"]
        ]
        if model.task == "classification":
            outputs = [
                {"name": "label", "datatype": "BYTES" if _labels_are_text(model) else "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.classes)]},
            ]
        else:
            outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        return {
            "name": model.name,
            "versions": [str(v) for v in self.registry.versions(model.name)],
            "platform": f"sklearn_{model.runtime.name}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "version": str(model.version),
                "task": model.task,
                "classes": model.classes,
                "runtime": model.runtime.name,
                "contract_fingerprint": model.fingerprint,
                "preprocessed_input": {
                    "name": PREPROCESSED_INPUT,
                    "datatype": "FP64",
                    "shape": [-1, model.transformed_width],
                },
            },
        }

    def infer(
        self, name: str, version: str | int | None, body: Any, request_id: str, model: LoadedModel | None = None
    ) -> dict[str, Any]:
        """Answer one infer request for ``name`` (at ``version``, or as deployed); ``model`` is the version
        already resolved for this request, so a canary draw is made once."""
        model = model or self.resolve(name, version)
        request = parse_infer_request(body)
        features = self._features(model, request)
        rows = features.shape[0]
        if rows > self.max_rows:
            raise PayloadTooLarge(f"{rows} rows exceed the limit of {self.max_rows} per request")
        label = str(model.version)
        started = time.perf_counter()
        try:
            prediction = model.predict(features) if rows else None
        except (ValueError, TypeError, IndexError) as exc:  # e.g. values the estimator cannot take
            raise InferenceInputError(f"the model could not predict on these inputs: {str(exc)[:300]}") from None
        labelled(INFERENCE_LATENCY, name, label, model.runtime.name).observe(time.perf_counter() - started)
        labelled(INFERENCE_ROWS, name, label).inc(rows)
        outputs: list[dict[str, Any]] = []
        if model.task == "classification":
            labels = prediction.labels if prediction is not None else np.empty(0, dtype=object)
            outputs.append(encode_tensor("label", np.asarray(labels if labels is not None else [])))
            if prediction is None or prediction.probabilities is not None:
                probabilities = (
                    prediction.probabilities
                    if prediction is not None and prediction.probabilities is not None
                    else np.empty((0, len(model.classes)))
                )
                outputs.append(encode_tensor("probabilities", probabilities, {"classes": model.classes}))
        else:
            values = prediction.values if prediction is not None and prediction.values is not None else np.empty(0)
            outputs.append(encode_tensor("prediction", values))
        if request.outputs is not None:
            unknown = set(request.outputs) - {o["name"] for o in outputs}
            if unknown:
                raise InferenceInputError(f"unknown output(s): {', '.join(sorted(unknown))}")
            outputs = [o for o in outputs if o["name"] in request.outputs]
        return {
            "model_name": name,
            "model_version": label,
            "id": request.id or request_id,
            "parameters": self._response_parameters(model, request),
            "outputs": outputs,
        }

    @staticmethod
    def _response_parameters(model: LoadedModel, request: InferRequest) -> dict[str, Any]:
        """The runtime and contract, plus the request's ``instance_ids`` and ``warnings`` when it had them
        (the preprocessing service puts them there; echoing them saves a caller from parsing the request)."""
        parameters: dict[str, Any] = {"runtime": model.runtime.name, "contract_fingerprint": model.fingerprint}
        for key in ECHOED_PARAMETERS:
            if key in request.parameters:
                parameters[key] = request.parameters[key]
        return parameters

    def _features(self, model: LoadedModel, request: InferRequest) -> np.ndarray:
        """The final estimator's input: the preprocessed tensor as sent, or raw features transformed here."""
        tensor = request.input(PREPROCESSED_INPUT)
        if tensor is not None:
            if len(request.inputs) != 1:
                raise InferenceInputError(f"{PREPROCESSED_INPUT!r} must be the only input")
            sent = request.parameters.get("contract_fingerprint", tensor.parameters.get("contract_fingerprint"))
            if not isinstance(sent, str):
                raise InferenceInputError(f"{PREPROCESSED_INPUT!r} needs parameters.contract_fingerprint")
            if sent != model.fingerprint:
                raise ContractMismatch(
                    f"the features were prepared for contract {sent[:12]}, but version {model.version} of "
                    f"{model.name!r} expects {model.fingerprint[:12]}: transform them for this version"
                )
            if tensor.datatype not in ("FP16", "FP32", "FP64") or len(tensor.shape) != 2:
                raise InferenceInputError(f"{PREPROCESSED_INPUT!r} must be a 2-D FP32 or FP64 tensor")
            if tensor.shape[1] != model.transformed_width:
                raise InferenceInputError(
                    f"{PREPROCESSED_INPUT!r} has {tensor.shape[1]} columns, the model takes {model.transformed_width}"
                )
            if np.isnan(tensor.data).any():
                raise InferenceInputError(f"{PREPROCESSED_INPUT!r} must not contain null")
            return np.asarray(tensor.data, dtype=np.float64)
        return model.transform_records(raw_records(model, request))


def _labels_are_text(model: LoadedModel) -> bool:
    return any(isinstance(c, str) for c in model.classes)


def raw_records(model: LoadedModel, request: InferRequest) -> list[dict[str, Any]]:
    """Check per-feature input tensors against the feature contract and turn them into records.

    A tensor of the wrong shape is a malformed protocol request (400); features that are missing,
    unknown, of the wrong type, null where training never was, or outside the allowed categories are
    well-formed but wrong (422, with every problem listed per input).
    """
    features = {f["name"]: f for f in model.contract["features"]}
    problems: dict[str, list[str]] = {}
    for tensor in request.inputs:
        if tensor.name not in features:
            problems.setdefault(tensor.name[:100], []).append("unknown input: not a feature of this model")
    present = {t.name: t for t in request.inputs if t.name in features}
    for name, spec in features.items():
        if spec["required"] and name not in present:
            problems.setdefault(name, []).append("missing: this feature is required")
    rows: int | None = None
    columns: dict[str, list[Any]] = {}
    for name, tensor in present.items():
        spec = features[name]
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InferenceInputError(f"input {name!r} must have shape [N] or [N, 1], got {list(tensor.shape)}")
        values = tensor.data.reshape(-1).tolist()
        if rows is None:
            rows = len(values)
        elif len(values) != rows:
            raise InferenceInputError(f"input {name!r} has {len(values)} rows, other inputs have {rows}")
        if tensor.datatype not in _ACCEPTS[spec["type"]]:
            problems.setdefault(name, []).append(f"a {spec['type']} feature: datatype {tensor.datatype} does not fit")
            continue
        cleaned: list[Any] = []
        for row, value in enumerate(values):
            if isinstance(value, float) and value != value:  # NaN from null in a float tensor
                value = None
            if isinstance(value, str):
                value = value.strip()
            if value is None:
                if not spec["nullable"]:
                    problems.setdefault(name, []).append(f"row {row}: must not be null")
            elif spec["type"] == "category":
                if value not in spec["categories"]:
                    allowed = ", ".join(spec["categories"][:20])
                    problems.setdefault(name, []).append(f"row {row}: {value[:50]!r} is not one of {allowed}")
                value = (spec.get("model_values") or {}).get(value, value)
            cleaned.append(value)
        columns[name] = cleaned
    if problems:
        first = next(iter(problems))
        raise UnprocessableEntity(
            f"the inputs do not fit the feature contract ({first}: {problems[first][0]})",
            errors={"inputs": {name: messages[:10] for name, messages in problems.items()}},
        )
    count = rows or 0
    return [{name: columns[name][i] if name in columns else None for name in features} for i in range(count)]
