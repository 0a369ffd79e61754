"""Runtimes that execute a model's final estimator, and the checks that decide which one serves.

``OnnxRuntime`` runs the estimator compiled by skl2onnx (tens of microseconds a row); ``SklearnRuntime``
calls scikit-learn itself (hundreds of microseconds, milliseconds for a forest). A model is served by
ONNX only when its compiled form gave the same labels and probabilities within ``PARITY_TOLERANCE`` on
held-out data, at registration and again at every load; otherwise scikit-learn serves it. No Flask here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shared.errors import UnprocessableEntity

log = logging.getLogger(__name__)

#: Largest absolute difference allowed between ONNX and scikit-learn probabilities (and, scaled by
#: max(1, |value|), regression outputs). Labels must be identical.
PARITY_TOLERANCE = 1e-6


@dataclass
class Prediction:
    """What a runtime returns: labels and probabilities for classifiers, values for regressors."""

    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None


class Runtime(Protocol):
    """Runs a final estimator on a 2-D float array of transformed features."""

    name: str

    def predict(self, features: np.ndarray) -> Prediction: ...


class SklearnRuntime:
    """scikit-learn's own predict / predict_proba."""

    name = "sklearn"

    def __init__(self, estimator: Any, task: str) -> None:
        self.estimator = estimator
        self.task = task
        names = getattr(estimator, "feature_names_in_", None)
        # A bare estimator fitted on a DataFrame checks column names; give it the names it was fitted with.
        self.columns = [str(n) for n in names] if names is not None else None

    def predict(self, features: np.ndarray) -> Prediction:
        if self.columns is not None:
            import pandas as pd

            features = pd.DataFrame(features, columns=self.columns)
        if self.task == "regression":
            return Prediction(values=np.asarray(self.estimator.predict(features), dtype=np.float64).reshape(-1))
        if hasattr(self.estimator, "predict_proba"):
            probabilities = np.asarray(self.estimator.predict_proba(features), dtype=np.float64)
            return Prediction(labels=np.asarray(self.estimator.predict(features)), probabilities=probabilities)
        return Prediction(labels=np.asarray(self.estimator.predict(features)))


class OnnxRuntime:
    """onnxruntime on the skl2onnx form of the final estimator."""

    name = "onnx"

    def __init__(self, model: bytes, task: str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.dtype = np.float64 if first.type == "tensor(double)" else np.float32
        self.task = task

    def predict(self, features: np.ndarray) -> Prediction:
        with np.errstate(over="ignore"):
            cast = np.ascontiguousarray(features, dtype=self.dtype)
        if self.dtype is np.float32 and not np.isfinite(cast).all() and np.isfinite(features).all():
            # Finite in float64, infinite in the model's float32: the model would answer about infinity.
            raise UnprocessableEntity(
                "a feature value is beyond the range this model's runtime can represent (about 3.4e38)"
            )
        outputs = self.session.run(None, {self.input_name: cast})
        if self.task == "regression":
            return Prediction(values=np.asarray(outputs[0], dtype=np.float64).reshape(-1))
        probabilities = np.asarray(outputs[1], dtype=np.float64) if len(outputs) > 1 else None
        return Prediction(labels=np.asarray(outputs[0]).reshape(-1), probabilities=probabilities)


def compare(reference: Prediction, candidate: Prediction) -> str | None:
    """None when ``candidate`` agrees with ``reference``, else a sentence saying how it differs."""
    if reference.values is not None:
        if candidate.values is None or candidate.values.shape != reference.values.shape:
            return "regression output has the wrong shape"
        scale = np.maximum(1.0, np.abs(reference.values))
        worst = float(np.max(np.abs(candidate.values - reference.values) / scale, initial=0.0))
        return None if worst <= PARITY_TOLERANCE else f"values differ by up to {worst:.3g} (relative)"
    if reference.labels is None or candidate.labels is None:
        return "no labels"
    if reference.labels.shape != candidate.labels.shape or not np.array_equal(
        reference.labels.astype(str), candidate.labels.astype(str)
    ):
        return "labels differ"
    if reference.probabilities is not None:
        if candidate.probabilities is None or candidate.probabilities.shape != reference.probabilities.shape:
            return "probabilities have the wrong shape"
        worst = float(np.max(np.abs(candidate.probabilities - reference.probabilities), initial=0.0))
        if worst > PARITY_TOLERANCE:
            return f"probabilities differ by up to {worst:.3g}"
    return None


def convert_to_onnx(estimator: Any, task: str, sample: np.ndarray) -> tuple[bytes | None, dict[str, Any]]:
    """Compile ``estimator`` with skl2onnx and check parity on ``sample`` (held-out transformed rows).

    Double precision is tried first (exact for linear models), then single (what tree ensembles use
    internally). Returns the ONNX bytes, or None, and a report stored in the version's metadata.
    """
    from skl2onnx import to_onnx

    reference = SklearnRuntime(estimator, task).predict(sample)
    failures: list[str] = []
    for dtype in (np.float64, np.float32):
        label = "double" if dtype is np.float64 else "float"
        try:
            options = {id(estimator): {"zipmap": False}} if task == "classification" else None
            model = to_onnx(estimator, sample[:1].astype(dtype), options=options).SerializeToString()
            difference = compare(reference, OnnxRuntime(model, task).predict(sample))
        except Exception as exc:  # noqa: BLE001 - skl2onnx and onnxruntime raise many kinds; all mean "no"
            failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            continue
        if difference is None:
            return model, {"runtime": "onnx", "precision": label, "parity_rows": int(sample.shape[0])}
        failures.append(f"{label}: {difference}")
    return None, {"runtime": "sklearn", "reason": "; ".join(failures)}
