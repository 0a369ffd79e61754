"""The model registry on disk, and a loaded, verified model version ready to predict. No Flask here.

Every read of a version goes through ``shared.artifacts``: signature and hashes are checked before the
artifact is unpickled. A loaded version knows its feature contract, turns raw feature columns into the
transformed matrix its final estimator expects, and predicts through the runtime chosen at load time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_service.runtimes import OnnxRuntime, Prediction, Runtime, SklearnRuntime, compare
from shared import artifacts
from shared.contracts import fingerprint
from shared.errors import ArtifactError, InferenceInputError, ModelNotFound
from shared.pipeline import library_versions, records_frame, split_pipeline, to_dense_float

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """One verified model version in memory."""

    name: str
    version: int
    metadata: dict[str, Any]
    transformer: Any | None
    estimator: Any
    runtime: Runtime
    runtime_note: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.metadata["task"])

    @property
    def contract(self) -> dict[str, Any]:
        return dict(self.metadata["contract"])

    @property
    def fingerprint(self) -> str:
        return str(self.metadata["contract_fingerprint"])

    @property
    def classes(self) -> list[Any]:
        return list(self.metadata.get("classes") or [])

    @property
    def transformed_width(self) -> int:
        return int(self.metadata["transformed"]["count"])

    def transform_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Raw records (already checked against the contract) -> the final estimator's input matrix."""
        if not records:
            return np.empty((0, self.transformed_width))
        frame = records_frame(records, self.contract)
        data: Any = frame if self.metadata.get("input_format") == "dataframe" else frame.to_numpy(dtype=np.float64)
        if self.transformer is None:
            return to_dense_float(data)
        try:
            return to_dense_float(self.transformer.transform(data))
        except (ValueError, TypeError, KeyError) as exc:
            raise InferenceInputError(f"the model's transforms rejected the input: {exc}") from None

    def predict(self, features: np.ndarray) -> Prediction:
        """Predict on transformed features with the serving runtime."""
        return self.runtime.predict(features)

    def describe(self) -> dict[str, Any]:
        """Public metadata of this version (no hashes or signature), with the serving runtime."""
        public = {k: v for k, v in self.metadata.items() if k not in ("signature", "files", "parity_sample")}
        public["runtime"] = {"name": self.runtime.name, "note": self.runtime_note}
        public["warnings"] = list(self.warnings)
        return public


class Registry:
    """Model versions under one root folder, signed with one key."""

    def __init__(self, root: Path, key: bytes) -> None:
        self.root = Path(root)
        self.key = key
        self._write_lock = threading.Lock()

    def models(self) -> list[str]:
        """Names of the registered models."""
        return [name for name in artifacts.list_models(self.root) if artifacts.list_versions(self.root, name)]

    def versions(self, name: str) -> list[int]:
        """Versions of one model, ascending; ``ModelNotFound`` if it has none."""
        versions = artifacts.list_versions(self.root, name)
        if not versions:
            raise ModelNotFound(name)
        return versions

    def metadata(self, name: str, version: int | str) -> dict[str, Any]:
        """Verified metadata of one version."""
        directory = artifacts.version_dir(self.root, name, version)
        if not (directory / artifacts.METADATA_FILE).is_file():
            if not artifacts.list_versions(self.root, name):
                raise ModelNotFound(name)
            raise ModelNotFound(name, version)
        return artifacts.read_metadata(directory, self.key)

    def deployment(self, name: str) -> dict[str, Any] | None:
        """The deployment record of a model, or None when nothing is deployed."""
        return artifacts.read_deployment(self.root, name)

    def next_version(self, name: str) -> int:
        """The version number a new registration of ``name`` gets."""
        versions = artifacts.list_versions(self.root, name)
        return versions[-1] + 1 if versions else 1

    def add_version(self, name: str, estimator: Any, metadata: dict[str, Any], onnx: bytes | None) -> dict[str, Any]:
        """Write the next version of ``name``; returns its signed metadata (with ``version``)."""
        with self._write_lock:
            version = self.next_version(name)
            return artifacts.write_version(self.root, name, version, estimator, metadata, self.key, onnx)

    def deploy(self, name: str, version: int) -> dict[str, Any]:
        """Make ``version`` the one that serves ``name`` (keeping no canary)."""
        self.metadata(name, version)  # must exist (404 otherwise)
        artifacts.verify_files(artifacts.version_dir(self.root, name, version), self.key)  # and be intact
        record = {"version": int(version)}
        artifacts.write_deployment(self.root, name, record)
        return record

    def load(self, name: str, version: int, *, use_onnx: bool = True, onnx_threads: int = 1) -> LoadedModel:
        """Verify and load one version, choose its runtime, and report library mismatches."""
        directory = artifacts.version_dir(self.root, name, version)
        if not (directory / artifacts.METADATA_FILE).is_file():
            raise ModelNotFound(name, version)
        verified = artifacts.load_version(directory, self.key)
        metadata = verified.metadata
        if metadata.get("name") != name or metadata.get("version") != int(version):
            raise ArtifactError("metadata names another model or version (a copied folder?)")
        if fingerprint(metadata["contract"]) != metadata.get("contract_fingerprint"):
            raise ArtifactError("feature contract does not match its fingerprint")
        transformer, estimator = split_pipeline(verified.estimator)
        warnings = []
        trained_with = metadata.get("libraries", {})
        for library, running in library_versions().items():
            if library != "python" and trained_with.get(library) not in (None, running):
                warnings.append(f"trained with {library} {trained_with[library]}, running {running}")
        task = metadata["task"]
        runtime: Runtime = SklearnRuntime(estimator, task)
        note = metadata.get("onnx", {}).get("reason", "")
        if use_onnx and verified.onnx is not None:
            runtime, note = self._onnx_or_fallback(verified.onnx, task, transformer, estimator, metadata, onnx_threads)
        elif not use_onnx:
            note = "ONNX disabled by MODEL_USE_ONNX"
        loaded = LoadedModel(name, int(version), metadata, transformer, estimator, runtime, note, warnings)
        log.info("model loaded", extra={"model": name, "version": version, "runtime": runtime.name})
        return loaded

    def _onnx_or_fallback(
        self,
        model: bytes,
        task: str,
        transformer: Any,
        estimator: Any,
        metadata: dict[str, Any],
        threads: int,
    ) -> tuple[Runtime, str]:
        """The ONNX runtime if it still agrees with scikit-learn on the signed parity sample here."""
        sklearn_runtime = SklearnRuntime(estimator, task)
        try:
            onnx_runtime = OnnxRuntime(model, task, threads)
            sample = metadata.get("parity_sample") or []
            if sample:
                probe = LoadedModel("", 0, metadata, transformer, estimator, sklearn_runtime)
                features = probe.transform_records(sample)
                difference = compare(sklearn_runtime.predict(features), onnx_runtime.predict(features))
                if difference is not None:
                    return sklearn_runtime, f"ONNX parity failed at load: {difference}"
            return (
                onnx_runtime,
                f"ONNX {metadata.get('onnx', {}).get('precision', '')}, parity checked at load".strip(),
            )
        except Exception as exc:  # noqa: BLE001 - any onnxruntime failure means scikit-learn serves
            return sklearn_runtime, f"ONNX unavailable at load: {type(exc).__name__}"
