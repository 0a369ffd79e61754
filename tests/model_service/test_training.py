"""Registration: contract, held-out metrics, quality gate, ONNX parity, versions and deployment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from model_service.registry import Registry
from model_service.training import (
    DEMOS,
    QualityGate,
    QualityGateFailed,
    RegistrationError,
    breast_cancer,
    register_model,
    train_demo,
)
from shared import artifacts
from shared.contracts import fingerprint
from tests.conftest import SIGNING_KEY


@pytest.fixture
def empty_registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models", SIGNING_KEY)


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_metadata_is_complete(demo_registry_root: Path, name: str) -> None:
    metadata = Registry(demo_registry_root, SIGNING_KEY).metadata(name, 1)
    assert metadata["name"] == name
    assert metadata["version"] == 1
    assert metadata["task"] in ("classification", "regression")
    assert set(metadata["libraries"]) == {"python", "scikit-learn", "numpy"}
    assert metadata["created"].endswith("+00:00")
    assert set(metadata["files"]) == {"model.joblib", "model.onnx"}
    assert metadata["contract_fingerprint"] == fingerprint(metadata["contract"])
    assert metadata["onnx"]["runtime"] == "onnx"
    assert metadata["metrics"]["primary"] in metadata["metrics"]
    assert metadata["metrics"]["rows"] > 0
    assert len(metadata["examples"]) == 3
    assert artifacts.read_deployment(demo_registry_root, name) == {"version": 1}
    if metadata["task"] == "classification":
        assert metadata["metrics"]["accuracy"] >= 0.9
        assert metadata["classes"]
    else:
        assert metadata["metrics"]["r2"] >= 0.3
        assert metadata["classes"] is None


def test_breast_cancer_features_are_snake_case(demo_registry_root: Path) -> None:
    contract = Registry(demo_registry_root, SIGNING_KEY).metadata("breast-cancer", 1)["contract"]
    names = [f["name"] for f in contract["features"]]
    assert len(names) == 30
    assert "mean_radius" in names
    assert all(n == n.lower() and " " not in n for n in names)


def test_penguins_contract_has_categories_and_missing_values(demo_registry_root: Path) -> None:
    contract = Registry(demo_registry_root, SIGNING_KEY).metadata("penguins", 1)["contract"]
    features = {f["name"]: f for f in contract["features"]}
    assert features["island"]["type"] == "category"
    assert features["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert features["sex"]["nullable"] is True
    assert features["bill_length_mm"]["type"] == "number"
    assert features["bill_length_mm"]["range"]["min"] < features["bill_length_mm"]["range"]["max"]


def test_later_versions_wait_for_deploy(empty_registry: Registry) -> None:
    train_demo(empty_registry, "diabetes")
    second = train_demo(empty_registry, "diabetes")
    assert second["version"] == 2
    assert empty_registry.deployment("diabetes") == {"version": 1}
    third = train_demo(empty_registry, "diabetes", deploy=True)
    assert third["version"] == 3
    assert empty_registry.deployment("diabetes") == {"version": 3}
    assert empty_registry.versions("diabetes") == [1, 2, 3]


def test_quality_gate_refuses_and_writes_nothing(empty_registry: Registry) -> None:
    with pytest.raises(QualityGateFailed, match="under the quality gate"):
        train_demo(empty_registry, "diabetes", gate=QualityGate(min_r2=0.99))
    assert empty_registry.models() == []
    with pytest.raises(QualityGateFailed):
        train_demo(empty_registry, "breast-cancer", gate=QualityGate(min_accuracy=0.999))


def test_user_pipeline_is_scored_by_a_refit_clone(empty_registry: Registry) -> None:
    frame, target, model = breast_cancer()
    model.fit(frame.drop(columns=[target]), frame[target])  # fitted on everything, as users do
    metadata = register_model(empty_registry, "my-model", model, frame, target)
    assert metadata["metrics"]["method"].startswith("an unfitted clone")
    assert metadata["input_format"] == "dataframe"
    assert metadata["deployed"] is True
    loaded = empty_registry.load("my-model", 1)
    assert loaded.runtime.name == "onnx"


def test_estimator_fitted_on_arrays_is_registered_with_array_input(empty_registry: Registry) -> None:
    frame, target, _ = breast_cancer()
    model = Pipeline([("s", StandardScaler()), ("m", LogisticRegression(max_iter=5000))])
    model.fit(frame.drop(columns=[target]).to_numpy(), frame[target])
    metadata = register_model(empty_registry, "arrays", model, frame, target)
    assert metadata["input_format"] == "array"
    loaded = empty_registry.load("arrays", 1)
    features = loaded.transform_records(metadata["examples"])
    assert list(loaded.predict(features).labels) == list(
        model.predict(pd.DataFrame(metadata["examples"]).to_numpy(dtype=float))
    )


class Unconvertible(ClassifierMixin, BaseEstimator):
    """A classifier skl2onnx knows nothing about: registration must fall back to scikit-learn."""

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Unconvertible:
        self.classes_ = np.unique(labels)
        self.model_ = LogisticRegression(max_iter=5000).fit(features, labels)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model_.predict(features)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(features)


def test_unconvertible_model_falls_back_to_sklearn(empty_registry: Registry) -> None:
    frame, target, _ = breast_cancer()
    model = Pipeline([("s", StandardScaler()), ("m", Unconvertible())])
    metadata = register_model(empty_registry, "custom", model, frame, target, fit=True)
    assert metadata["onnx"]["runtime"] == "sklearn"
    assert "reason" in metadata["onnx"]
    assert "model.onnx" not in metadata["files"]
    loaded = empty_registry.load("custom", 1)
    assert loaded.runtime.name == "sklearn"


def test_registration_errors(empty_registry: Registry) -> None:
    frame, target, model = breast_cancer()
    with pytest.raises(RegistrationError, match="target column"):
        register_model(empty_registry, "x", model, frame, "nope", fit=True)
    with pytest.raises(RegistrationError, match="at least 10 rows"):
        register_model(empty_registry, "x", model, frame.head(5), target, fit=True)
    fitted = model.fit(frame.drop(columns=[target]), frame[target])
    with pytest.raises(RegistrationError, match="lacks the model's features"):
        register_model(empty_registry, "x", fitted, frame.drop(columns=["mean_radius"]), target)
    with pytest.raises(artifacts.InvalidName):
        register_model(empty_registry, "../evil", fitted, frame, target)
    assert not (empty_registry.root.parent / "evil").exists()


def test_metadata_json_is_sorted_and_finite(demo_registry_root: Path) -> None:
    text = (demo_registry_root / "penguins" / "1" / "metadata.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["parity_sample"][0].keys() >= {"island", "sex"}


def test_bare_estimator_fitted_on_a_frame_serves_without_warnings(empty_registry: Registry) -> None:
    # pytest turns warnings into errors: scikit-learn's "X does not have valid feature names" would fail this.
    frame, target, _ = breast_cancer()
    model = LogisticRegression(max_iter=10000).fit(frame.drop(columns=[target]), frame[target])
    register_model(empty_registry, "bare", model, frame, target)
    loaded = empty_registry.load("bare", 1, use_onnx=False)
    rows = loaded.metadata["examples"]
    assert list(loaded.predict(loaded.transform_records(rows)).labels) == list(
        model.predict(pd.DataFrame(rows)[list(model.feature_names_in_)])
    )
