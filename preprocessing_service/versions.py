"""Model versions as the preprocessing service sees them: a schema, the fitted transforms, a fingerprint.

A ``Preprocessor`` is loaded (signature and hashes verified first, as in the model service) the first
time a version is asked for, so a version registered after start-up is served without a restart. No Flask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from marshmallow import ValidationError

from preprocessing_service.contracts import (
    INSTANCE_ID,
    TransformRequest,
    fast_loader,
    fast_matrix_loader,
    instance_schema,
    json_schema,
)
from preprocessing_service.drift import DriftRecorder, FeatureBins
from preprocessing_service.transforms import Transform, UnknownCategory
from shared import artifacts
from shared.errors import (
    ArtifactError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    UnprocessableEntity,
)
from shared.metrics import OUT_OF_RANGE, PREPROCESS_REJECTED, PREPROCESS_ROWS, TRANSFORM_LATENCY, labelled
from shared.oip import encode_tensor
from shared.pipeline import split_pipeline

log = logging.getLogger(__name__)

#: The input tensor name the model service expects for transformed features.
PREPROCESSED_INPUT = "preprocessed"
#: Seconds before a version that failed to load is tried again.
RETRY_FAILED_AFTER = 30.0


@dataclass
class Result:
    """What one transform request produced."""

    features: np.ndarray
    ids: list[Any]
    warnings: list[dict[str, Any]] = field(default_factory=list)


class Preprocessor:
    """Validation and transforms of one model version."""

    def __init__(
        self,
        name: str,
        version: int,
        metadata: dict[str, Any],
        transformer: Any | None,
        *,
        unknown: str,
        compile_transforms: bool,
        drift: FeatureBins | None = None,
    ) -> None:
        self.name = name
        self.drift = drift
        self.version = version
        self.metadata = metadata
        self.contract = metadata["contract"]
        self.fingerprint = str(metadata["contract_fingerprint"])
        self.width = int(metadata["transformed"]["count"])
        self.schema = instance_schema(self.contract, f"{name}_v{version}", unknown)
        self.fast_load = fast_loader(self.contract, unknown)
        self.matrix_load = fast_matrix_loader(self.contract, unknown)
        self._names = [f["name"] for f in self.contract["features"]]
        self._integers = {f["name"] for f in self.contract["features"] if f["type"] == "integer"}
        self.transform = Transform(
            transformer, self.contract, metadata.get("input_format", "dataframe"), compile_transforms
        )
        self.transform.verify(metadata.get("parity_sample") or [])
        self.has_id_feature = any(f["name"] == INSTANCE_ID for f in self.contract["features"])
        self.ranges = {
            f["name"]: (f["range"]["min"], f["range"]["max"])
            for f in self.contract["features"]
            if f.get("range") and f["range"]["min"] is not None and f["range"]["max"] is not None
        }
        # Bounds per column for the vectorised check; columns without a range can never warn.
        self._lows = np.array([self.ranges.get(n, (-np.inf, np.inf))[0] for n in self._names], dtype=np.float64)
        self._highs = np.array([self.ranges.get(n, (-np.inf, np.inf))[1] for n in self._names], dtype=np.float64)

    def example(self) -> dict[str, Any] | None:
        """One held-out instance, in contract order, as a client would send it."""
        examples = self.metadata.get("examples") or []
        if not examples:
            return None
        return {f["name"]: examples[0].get(f["name"]) for f in self.contract["features"]}

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one instance, with an example."""
        return json_schema(self.contract, title=f"{self.name} version {self.version}", example=self.example())

    def run(self, body: Any, max_rows: int) -> Result:
        """Validate ``{"instances": [...]}`` and transform it. Raises 413 over ``max_rows``, 422 on bad data."""
        started = time.perf_counter()
        instances = body.get("instances") if type(body) is dict and len(body) == 1 else None
        if type(instances) is not list or not instances:
            instances = TransformRequest().load(body)["instances"]  # raises with the precise message
        if len(instances) > max_rows:
            raise PayloadTooLarge(f"{len(instances)} instances exceed the limit of {max_rows} per request")
        if self.matrix_load is not None and self.transform.kind != "sklearn":
            loaded = self.matrix_load(instances)
            if loaded is not None:
                raw, ids = loaded
                warnings = self._matrix_range_warnings(raw)
                features = self.transform.from_matrix(raw) if raw.shape[0] else np.empty((0, self.width))
                if self.drift is not None:
                    self.drift.observe_matrix(raw)
                return self._done(features, ids, warnings, started)
        records = self.fast_load(instances)
        try:
            if records is None:  # something is wrong: the schema finds it and words the messages
                records = self.schema.load(instances, many=True)
        except ValidationError as exc:
            PREPROCESS_REJECTED.labels(self.name, str(self.version)).inc()
            errors = exc.messages if isinstance(exc.messages, dict) else {}
            instance_errors = {str(index): problems for index, problems in errors.items()}
            raise UnprocessableEntity(
                f"{len(instance_errors)} of {len(instances)} instances do not fit the feature contract of "
                f"version {self.version} of {self.name!r}",
                errors={"instances": instance_errors},
            ) from None
        ids = [None if self.has_id_feature else record.pop(INSTANCE_ID, None) for record in records]
        warnings = self._range_warnings(records)
        try:
            features = self.transform(records)
        except UnknownCategory as exc:
            PREPROCESS_REJECTED.labels(self.name, str(self.version)).inc()
            raise UnprocessableEntity(str(exc), errors={"instances": {"_transform": [str(exc)]}}) from None
        except (ValueError, TypeError) as exc:
            PREPROCESS_REJECTED.labels(self.name, str(self.version)).inc()
            message = f"the model's transforms refused the instances: {str(exc)[:300]}"
            raise UnprocessableEntity(message, errors={"instances": {"_transform": [message]}}) from None
        if features.shape[0] and not np.isfinite(features).all():
            bad = sorted({int(i) for i in np.nonzero(~np.isfinite(features).all(axis=1))[0]})
            message = "a missing value the model's transforms do not fill"
            raise UnprocessableEntity(message, errors={"instances": {str(i): {"_transform": [message]} for i in bad}})
        if features.shape[0] == 0:
            features = np.empty((0, self.width))
        if self.drift is not None:
            self.drift.observe_records(records)
        return self._done(features, ids, warnings, started)

    def _done(self, features: np.ndarray, ids: list[Any], warnings: list[dict[str, Any]], started: float) -> Result:
        labelled(PREPROCESS_ROWS, self.name, str(self.version)).inc(features.shape[0])
        labelled(TRANSFORM_LATENCY, self.name, str(self.version), self.transform.kind).observe(
            time.perf_counter() - started
        )
        return Result(features=features, ids=ids, warnings=warnings)

    def _matrix_range_warnings(self, raw: np.ndarray) -> list[dict[str, Any]]:
        """The same warnings as ``_range_warnings``, from the raw matrix, vectorised."""
        if not self.ranges or raw.shape[0] == 0:
            return []
        outside = (raw < self._lows) | (raw > self._highs)
        warnings = []
        for row, column in zip(*np.nonzero(outside), strict=True):
            name = self._names[column]
            low, high = self.ranges[name]
            value: float | int = float(raw[row, column])
            if name in self._integers:
                value = int(value)
            OUT_OF_RANGE.labels(self.name, str(self.version), name).inc()
            warnings.append(
                {
                    "instance": int(row),
                    "field": name,
                    "message": f"{value} is outside the range seen in training [{low}, {high}]",
                }
            )
        return warnings

    def _range_warnings(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        warnings: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            for feature, (low, high) in self.ranges.items():
                value = record.get(feature)
                if value is not None and not isinstance(value, bool) and not low <= value <= high:
                    OUT_OF_RANGE.labels(self.name, str(self.version), feature).inc()
                    warnings.append(
                        {
                            "instance": index,
                            "field": feature,
                            "message": f"{value} is outside the range seen in training [{low}, {high}]",
                        }
                    )
        return warnings

    def infer_request(self, result: Result, request_id: str) -> dict[str, Any]:
        """The Open Inference Protocol infer request for exactly this version."""
        return {
            "id": request_id,
            "parameters": {
                "model": self.name,
                "version": str(self.version),
                "contract_fingerprint": self.fingerprint,
                "instance_ids": result.ids,
                "warnings": result.warnings,
                "transform": self.transform.kind,
            },
            "inputs": [encode_tensor(PREPROCESSED_INPUT, result.features)],
        }


class Preprocessors:
    """Loaded versions, least recently used dropped beyond ``capacity``; loads are verified first."""

    def __init__(
        self,
        root: Path,
        key: bytes,
        *,
        unknown: str,
        compile_transforms: bool,
        capacity: int,
        drift: DriftRecorder | None = None,
    ) -> None:
        self.root = Path(root)
        self.drift = drift
        self.key = key
        self.unknown = unknown
        self.compile_transforms = compile_transforms
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, int], Preprocessor] = OrderedDict()
        self._failures: dict[tuple[str, int], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def deployed_version(self, name: str) -> int:
        """The version a model's deployment record names (for the unversioned routes)."""
        artifacts.validate_name(name)
        record = artifacts.read_deployment(self.root, name)
        if record is None:
            if artifacts.list_versions(self.root, name):
                raise ModelNotReady(name, "-", "no version is deployed")
            raise ModelNotFound(name)
        return int(record["version"])

    def get(self, name: str, version: str | int) -> Preprocessor:
        """The preprocessor of one version, loading (and verifying) it on first use."""
        key = (artifacts.validate_name(name), artifacts.validate_version(version))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            failure = self._failures.get(key)
            if failure and time.monotonic() - failure[1] < RETRY_FAILED_AFTER:
                raise ModelNotReady(name, key[1], failure[0])
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            loaded = self._load(*key)
            with self._lock:
                self._cache[key] = loaded
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
            return loaded

    def _load(self, name: str, version: int) -> Preprocessor:
        directory = artifacts.version_dir(self.root, name, version)
        if not (directory / artifacts.METADATA_FILE).is_file():
            if not artifacts.list_versions(self.root, name):
                raise ModelNotFound(name)
            raise ModelNotFound(name, version)
        try:
            verified = artifacts.load_version(directory, self.key)
            metadata = verified.metadata
            artifacts.check_identity(name, version, metadata)
            transformer, _ = split_pipeline(verified.estimator)
            preprocessor = Preprocessor(
                name,
                version,
                metadata,
                transformer,
                unknown=self.unknown,
                compile_transforms=self.compile_transforms,
                drift=self.drift.bins(name, version, metadata["contract"]) if self.drift is not None else None,
            )
        except ArtifactError as exc:
            with self._lock:
                self._failures[(name, version)] = (exc.detail, time.monotonic())
            log.error("model refused", extra={"model": name, "version": version, "reason": exc.detail})
            raise ModelNotReady(name, version, exc.detail) from None
        log.info(
            "preprocessor loaded",
            extra={"model": name, "version": version, "transform": preprocessor.transform.note},
        )
        return preprocessor

    def warm(self) -> None:
        """Load every deployed version ahead of its first request (errors are logged, not raised)."""
        for name in artifacts.list_models(self.root):
            try:
                self.get(name, self.deployed_version(name))
            except Exception:  # noqa: BLE001 - warming is best effort; requests report the real error
                log.warning("could not warm", extra={"model": name})

    def loaded(self) -> list[Preprocessor]:
        """Versions currently loaded."""
        with self._lock:
            return list(self._cache.values())

    def failures(self) -> dict[str, str]:
        """Versions that failed verification, with the reason."""
        with self._lock:
            return {f"{n}/{v}": reason for (n, v), (reason, _) in self._failures.items()}
