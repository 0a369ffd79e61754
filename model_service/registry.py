"""The model registry on disk, and a loaded, verified model version ready to predict. No Flask here.

Every read of a version goes through ``shared.artifacts``: signature and hashes are checked before the
artifact is unpickled. A loaded version knows its feature contract, turns raw feature columns into the
transformed matrix its final estimator expects, and predicts through the runtime chosen at load time.

Deployment changes (deploy, canary, promote, rollback) are read-modify-writes of ``deployment.json``,
serialised across threads and processes by an exclusive ``flock`` on the model's folder, and each one
verifies the version it sends traffic to before the record is replaced (atomically).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_service.deployments import Deployment
from model_service.runtimes import OnnxRuntime, Prediction, Runtime, SklearnRuntime, compare
from shared import artifacts
from shared.errors import ArtifactError, Conflict, InferenceInputError, InvalidName, ModelNotFound
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
        """What serves a model (``version`` and any ``canary``), or None when nothing is deployed.

        The rollback ``history`` kept in the same file is left out: it routes nothing.
        """
        record = artifacts.read_deployment(self.root, name)
        return None if record is None else {k: v for k, v in record.items() if k != "history"}

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
        """Make ``version`` the one that serves ``name``: the canary goes, the replaced version joins the history.

        An unreadable ``deployment.json`` is replaced (deploying is how it gets repaired).
        """
        target = artifacts.validate_version(version)
        return self._change(
            name, lambda current: Deployment(target) if current is None else current.deployed(target), repair=True
        )

    def set_canary(self, name: str, version: int, weight: float) -> dict[str, Any]:
        """Send ``weight`` percent (in (0, 100]) of unversioned traffic to ``version``; weight 0 removes the canary.

        With weight 0 the canary version is not looked at, so a broken canary can always be removed (the
        deployed version, which then takes all the traffic, is verified instead).
        """
        target = artifacts.validate_version(version)

        def change(current: Deployment | None) -> Deployment:
            if current is None:
                raise Conflict(f"model {name!r} has no deployed version for a canary to run beside")
            return current.with_canary(target, weight)

        return self._change(name, change)

    def promote(self, name: str) -> dict[str, Any]:
        """Make the canary the deployed version."""
        return self._change(name, lambda current: self._deployed(name, current).promoted())

    def rollback(self, name: str) -> dict[str, Any]:
        """Deploy again the version that served before the current one (repeatable down the history)."""
        return self._change(name, lambda current: self._deployed(name, current).rolled_back())

    def verify(self, name: str, version: int | str) -> dict[str, Any]:
        """Check one version's signature, file hashes and identity without unpickling it; its metadata."""
        directory = artifacts.version_dir(self.root, name, version)
        if not (directory / artifacts.METADATA_FILE).is_file():
            self.versions(name)
            raise ModelNotFound(name, version)
        try:
            metadata, _ = artifacts.verify_files(directory, self.key)
            artifacts.check_identity(name, int(version), metadata)
        except ArtifactError as exc:
            raise type(exc)(f"version {version} of model {name!r} failed verification: {exc.detail}") from None
        return metadata

    def _change(
        self, name: str, change: Callable[[Deployment | None], Deployment], *, repair: bool = False
    ) -> dict[str, Any]:
        """Apply ``change`` to the deployment record under the model's lock; the new record."""
        self.versions(name)  # an unknown model is a 404 before anything is touched
        with self._deployment_lock(name):
            current = self._current(name, repair=repair)
            updated = change(current)
            # The version this change sends (more) traffic to must be intact before anything routes to it.
            self.verify(name, updated.canary_version if updated.canary_version is not None else updated.version)
            record = updated.to_record()
            if updated != current:
                artifacts.write_deployment(self.root, name, record)
                log.info("deployment changed", extra={"model": name, "deployment": record})
        return record

    def _current(self, name: str, *, repair: bool) -> Deployment | None:
        """The parsed deployment record; an unreadable one raises ``ArtifactError`` unless ``repair``."""
        try:
            record = artifacts.read_deployment(self.root, name)
            if record is None:
                return None
            try:
                return Deployment.from_record(record)
            except (KeyError, TypeError, ValueError, InvalidName):
                raise ArtifactError(f"{artifacts.DEPLOYMENT_FILE} of model {name!r} is invalid") from None
        except ArtifactError as exc:
            if not repair:
                raise
            log.warning("replacing an unreadable deployment record", extra={"model": name, "reason": exc.detail})
            return None

    @staticmethod
    def _deployed(name: str, current: Deployment | None) -> Deployment:
        if current is None:
            raise Conflict(f"model {name!r} has no deployed version")
        return current

    @contextmanager
    def _deployment_lock(self, name: str) -> Iterator[None]:
        """Exclusive across threads and processes (each open gets its own lock) until the block ends.

        The lock is taken on the model's folder itself, so no lock file is left in the registry.
        """
        fd = os.open(self.root / artifacts.validate_name(name), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self, name: str, version: int, *, use_onnx: bool = True, onnx_threads: int = 1) -> LoadedModel:
        """Verify and load one version, choose its runtime, and report library mismatches."""
        directory = artifacts.version_dir(self.root, name, version)
        if not (directory / artifacts.METADATA_FILE).is_file():
            raise ModelNotFound(name, version)
        verified = artifacts.load_version(directory, self.key)
        metadata = verified.metadata
        artifacts.check_identity(name, int(version), metadata)
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
