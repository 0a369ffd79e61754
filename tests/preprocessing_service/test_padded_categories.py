"""Categories whose training values carried stray whitespace: clients send the clean value, the model
receives the value it was fitted on, in both services."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_service import create_app as create_model_app
from model_service.registry import Registry
from model_service.training import RegistrationError, penguins, register_model
from preprocessing_service import create_app
from shared.pipeline import records_frame
from tests.conftest import SIGNING_KEY
from tests.model_service.conftest import make_settings as model_settings
from tests.model_service.conftest import raw_inputs
from tests.preprocessing_service.conftest import make_settings


@pytest.fixture
def padded(tmp_path: Path) -> tuple[Registry, object]:
    frame, target, model = penguins()
    frame = frame.copy()
    frame["island"] = frame["island"].map({"Torgersen": " Torgersen ", "Dream": "Dream\t", "Biscoe": "Biscoe"})
    registry = Registry(tmp_path / "models", SIGNING_KEY)
    register_model(registry, "padded", model, frame, target, fit=True)
    return registry, model


def test_the_contract_lists_clean_values_and_what_the_model_knows(padded: tuple[Registry, object]) -> None:
    registry, _ = padded
    island = next(f for f in registry.metadata("padded", 1)["contract"]["features"] if f["name"] == "island")
    assert island["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert island["model_values"] == {"Dream": "Dream\t", "Torgersen": " Torgersen "}


def test_clean_values_reach_the_model_as_it_was_fitted(padded: tuple[Registry, object], tmp_path: Path) -> None:
    registry, model = padded
    instances = [
        {
            "bill_length_mm": 39.1,
            "bill_depth_mm": 18.7,
            "flipper_length_mm": 181.0,
            "body_mass_g": 3750.0,
            "island": island,
            "sex": "male",
        }
        for island in ("Torgersen", "  Dream ", "Biscoe")
    ]
    client = create_app(make_settings(registry.root), warm=False).test_client()
    request = client.post("/v1/models/padded/versions/1/transform", json={"instances": instances}).get_json()
    features = np.asarray(request["inputs"][0]["data"]).reshape(request["inputs"][0]["shape"])
    as_fitted = [
        dict(i, island={"Torgersen": " Torgersen ", "  Dream ": "Dream\t"}.get(i["island"], "Biscoe"))
        for i in instances
    ]
    contract = registry.metadata("padded", 1)["contract"]
    expected = np.asarray(model[:-1].transform(records_frame(as_fitted, contract)), dtype=float)  # type: ignore[index]
    np.testing.assert_allclose(features, expected, atol=1e-12)
    assert features[:, -5:].sum() == 6  # every island and sex one-hot matched: none fell through as unknown

    model_client = create_model_app(model_settings(registry.root)).test_client()
    raw = model_client.post("/v2/models/padded/infer", json={"inputs": raw_inputs(instances, contract)}).get_json()
    pre = model_client.post("/v2/models/padded/infer", json=request).get_json()
    assert raw["outputs"] == pre["outputs"]


def test_values_that_differ_only_in_whitespace_are_refused_at_registration(tmp_path: Path) -> None:
    frame, target, model = penguins()
    frame = frame.copy()
    frame.loc[frame.index[:5], "island"] = " Dream"  # and plain "Dream" elsewhere
    with pytest.raises(RegistrationError, match="differ only in surrounding whitespace"):
        register_model(Registry(tmp_path / "models", SIGNING_KEY), "clash", model, frame, target, fit=True)
