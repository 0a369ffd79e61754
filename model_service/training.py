"""Training the demo models and registering any fitted estimator: contract, metrics, quality gate, ONNX.

``register_model`` is the one path into the registry. It learns the feature contract from the training
frame, measures the model on held-out rows, refuses it if the primary metric is under the quality gate,
compiles the final estimator to ONNX and checks parity, then writes a signed version. No Flask here.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model_service.registry import Registry
from model_service.runtimes import convert_to_onnx
from shared.contracts import fingerprint, learn_contract, whitespace_clashes
from shared.errors import ModelgateError
from shared.pipeline import library_versions, split_pipeline, to_dense_float

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Default quality gates: the primary held-out metric a new version must reach.
DEFAULT_MIN_ACCURACY = 0.7
DEFAULT_MIN_R2 = 0.3
#: Held-out fraction when no separate evaluation file is given.
HOLDOUT_FRACTION = 0.2
#: Raw held-out rows kept (signed) in the metadata to re-check ONNX parity at every load.
PARITY_SAMPLE_ROWS = 64
SEED = 0


class RegistrationError(ModelgateError):
    """A model that cannot be registered (bad data, unusable estimator)."""

    status, title, slug = 422, "Registration Refused", "registration-refused"


class QualityGateFailed(RegistrationError):
    """The held-out metric is under the configured threshold."""

    slug = "quality-gate-failed"


@dataclass(frozen=True)
class QualityGate:
    """Minimum held-out accuracy (classifiers) and R² (regressors)."""

    min_accuracy: float = DEFAULT_MIN_ACCURACY
    min_r2: float = DEFAULT_MIN_R2

    def check(self, task: str, metrics: dict[str, Any]) -> None:
        metric, floor = ("accuracy", self.min_accuracy) if task == "classification" else ("r2", self.min_r2)
        if metrics[metric] < floor:
            raise QualityGateFailed(f"held-out {metric} {metrics[metric]:.4f} is under the quality gate {floor:.4f}")


def _json_value(value: Any) -> Any:
    """A NumPy or pandas scalar as plain JSON (NaN -> None)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a frame as JSON-safe dicts (missing values become null)."""
    return [{str(k): _json_value(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def evaluate(estimator: Any, task: str, features: Any, target: Any) -> dict[str, Any]:
    """Held-out metrics: accuracy, balanced accuracy, macro F1, ROC AUC, log loss; or R², MAE, RMSE."""
    from sklearn import metrics as m

    if task == "regression":
        predicted = estimator.predict(features)
        return {
            "r2": round(float(m.r2_score(target, predicted)), 6),
            "mae": round(float(m.mean_absolute_error(target, predicted)), 6),
            "rmse": round(float(math.sqrt(m.mean_squared_error(target, predicted))), 6),
            "rows": len(target),
        }
    predicted = estimator.predict(features)
    result: dict[str, Any] = {
        "accuracy": round(float(m.accuracy_score(target, predicted)), 6),
        "balanced_accuracy": round(float(m.balanced_accuracy_score(target, predicted)), 6),
        "f1_macro": round(float(m.f1_score(target, predicted, average="macro")), 6),
        "rows": len(target),
    }
    if hasattr(estimator, "predict_proba"):
        probabilities = estimator.predict_proba(features)
        classes = list(estimator.classes_)
        try:
            if len(classes) == 2:
                result["roc_auc"] = round(float(m.roc_auc_score(target, probabilities[:, 1])), 6)
            else:
                result["roc_auc"] = round(
                    float(m.roc_auc_score(target, probabilities, multi_class="ovr", labels=classes)), 6
                )
            result["log_loss"] = round(float(m.log_loss(target, probabilities, labels=classes)), 6)
        except ValueError:  # a class absent from the held-out rows
            pass
    return result


def register_model(
    registry: Registry,
    name: str,
    estimator: Any,
    frame: pd.DataFrame,
    target: str,
    *,
    holdout: pd.DataFrame | None = None,
    gate: QualityGate | None = None,
    deploy: bool = False,
    fit: bool = False,
    source: str = "user",
) -> dict[str, Any]:
    """Register ``estimator`` (fitted, or fitted here on the training split with ``fit=True``).

    Without a ``holdout`` frame, 20% of ``frame`` is held out: a ``fit=True`` model is trained on the
    other 80%; an already fitted one is measured by an unfitted clone refit on the 80% (its own held-out
    score would be optimistic, having seen those rows). The first version of a model is deployed at once,
    later ones only with ``deploy=True``.
    """
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.model_selection import train_test_split

    gate = gate or QualityGate()
    if target not in frame.columns:
        raise RegistrationError(f"target column {target!r} is not in the training data")
    frame = frame[frame[target].notna()]
    if len(frame) < 10:
        raise RegistrationError("the training data needs at least 10 rows with a target")
    features, labels = frame.drop(columns=[target]), frame[target]
    names_in = getattr(estimator, "feature_names_in_", None)
    if names_in is not None:
        missing = [c for c in names_in if c not in features.columns]
        if missing:
            raise RegistrationError(f"the training data lacks the model's features: {', '.join(map(str, missing))}")
        features = features[list(names_in)]
    if is_classifier(estimator):
        task = "classification"
    elif is_regressor(estimator):
        task = "regression"
    else:
        raise RegistrationError("the model is neither a classifier nor a regressor")

    stratify = labels if task == "classification" and labels.value_counts().min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=HOLDOUT_FRACTION, random_state=SEED, stratify=stratify
    )
    if fit:
        estimator.fit(x_train, y_train)
        scored, method = estimator, "trained on the training split, scored on the held-out split"
    if holdout is not None:
        if target not in holdout.columns:
            raise RegistrationError(f"target column {target!r} is not in the held-out data")
        holdout = holdout[holdout[target].notna()]
        x_test, y_test = holdout[features.columns], holdout[target]
        scored, method = estimator, "scored on the held-out file"
    elif not fit:
        try:
            scored = clone(estimator).fit(x_train, y_train)
            method = "an unfitted clone trained on 80% of the data, scored on the other 20%"
        except Exception:  # noqa: BLE001 - estimators that cannot be cloned or refit are scored as given
            scored, method = estimator, "the fitted model scored on 20% of its data (optimistic: it saw them)"
    if getattr(estimator, "feature_names_in_", None) is not None:
        input_format = "dataframe"
    else:
        input_format = "array"
        non_numeric = [c for c in features.columns if not np.issubdtype(features[c].dtype, np.number)]
        if non_numeric:
            raise RegistrationError(f"a model fitted on arrays needs numeric features; got {', '.join(non_numeric)}")

    try:
        metrics = evaluate(scored, task, x_test, y_test)
    except (ValueError, TypeError, KeyError) as exc:
        raise RegistrationError(f"the model could not predict on the held-out rows: {exc}") from None
    metrics["method"] = method
    metrics["primary"] = "accuracy" if task == "classification" else "r2"
    gate.check(task, metrics)

    transformer, final = split_pipeline(estimator)
    model_input = x_test if input_format == "dataframe" else x_test.to_numpy(dtype=np.float64)
    try:
        transformed = to_dense_float(transformer.transform(model_input) if transformer is not None else model_input)
    except (ValueError, TypeError) as exc:
        raise RegistrationError(f"the model's transforms do not produce numbers: {exc}") from None
    onnx, onnx_report = convert_to_onnx(final, task, transformed[:500])
    transformed_names: list[str] | None = None
    if transformer is not None and hasattr(transformer, "get_feature_names_out"):
        try:
            transformed_names = [str(n) for n in transformer.get_feature_names_out()]
        except (AttributeError, ValueError, TypeError):
            transformed_names = None

    clashes = whitespace_clashes(features)
    if clashes:
        raise RegistrationError(
            f"training values differ only in surrounding whitespace in {', '.join(clashes)}; clean the data"
        )
    contract = learn_contract(features)
    metadata: dict[str, Any] = {
        "task": task,
        "classes": [_json_value(c) for c in final.classes_] if task == "classification" else None,
        "target": target,
        "input_format": input_format,
        "contract": contract,
        "contract_fingerprint": fingerprint(contract),
        "transformed": {"count": int(transformed.shape[1]), "names": transformed_names},
        "metrics": metrics,
        "quality_gate": {"min_accuracy": gate.min_accuracy, "min_r2": gate.min_r2},
        "estimator": _describe_estimator(estimator),
        "training_rows": len(features),
        "libraries": library_versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source,
        "onnx": onnx_report,
        "examples": frame_records(x_test.head(3)),
        "parity_sample": frame_records(x_test.head(PARITY_SAMPLE_ROWS)),
    }
    signed = registry.add_version(name, estimator, metadata, onnx)
    if deploy or registry.deployment(name) is None:
        registry.deploy(name, signed["version"])
        signed = dict(signed, deployed=True)
    log.info(
        "model registered",
        extra={"model": name, "version": signed["version"], "runtime": onnx_report["runtime"]},
    )
    return signed


def _describe_estimator(estimator: Any) -> dict[str, Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return {"class": "Pipeline", "steps": [f"{n}: {type(s).__name__}" for n, s in estimator.steps]}
    return {"class": type(estimator).__name__}


# --- the demo models -------------------------------------------------------------------------------


def _snake(column: str) -> str:
    return "_".join(column.strip().lower().replace("-", " ").split())


def breast_cancer() -> tuple[pd.DataFrame, str, Any]:
    """Binary classification on scikit-learn's bundled breast cancer set (30 numeric features)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=_snake)
    frame["diagnosis"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=5000))])
    return frame, "diagnosis", model


def penguins() -> tuple[pd.DataFrame, str, Any]:
    """Multi-class on the Palmer penguins: numeric and categorical features, with missing values."""
    from palmerpenguins import load_penguins
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = load_penguins().drop(columns=["year"])
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    categorical = ["island", "sex"]
    frame = frame[[*numeric, *categorical, "species"]]
    transforms = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                numeric,
            ),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ]
    )
    model = Pipeline(
        [("transform", transforms), ("classify", RandomForestClassifier(n_estimators=100, random_state=SEED))]
    )
    return frame, "species", model


def diabetes() -> tuple[pd.DataFrame, str, Any]:
    """Regression on scikit-learn's bundled diabetes set, in its original (unscaled) units."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.rename(columns=_snake)
    frame["disease_progression"] = bunch.target
    model = Pipeline([("scale", StandardScaler()), ("regress", Ridge(alpha=1.0))])
    return frame, "disease_progression", model


DEMOS: dict[str, Callable[[], tuple[pd.DataFrame, str, Any]]] = {
    "breast-cancer": breast_cancer,
    "penguins": penguins,
    "diabetes": diabetes,
}


def train_demo(
    registry: Registry, name: str, *, gate: QualityGate | None = None, deploy: bool = False
) -> dict[str, Any]:
    """Train one demo model on its bundled data and register it as the next version of ``name``."""
    if name not in DEMOS:
        raise RegistrationError(f"unknown demo {name!r}; choose one of {', '.join(DEMOS)}")
    frame, target, model = DEMOS[name]()
    return register_model(registry, name, model, frame, target, gate=gate, deploy=deploy, fit=True, source="demo")
