"""HTTP routes: transform instances for one model version, and describe what an instance must be."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g

from preprocessing_service.versions import Preprocessor, Preprocessors
from shared.service import read_json

bp = Blueprint("preprocessing", __name__, url_prefix="/v1")


def _store() -> Preprocessors:
    store: Preprocessors = current_app.extensions["modelgate.preprocessors"]
    return store


def _preprocessor(name: str, version: str | None) -> Preprocessor:
    store = _store()
    return store.get(name, version if version is not None else store.deployed_version(name))


@bp.post("/models/<name>/transform")
@bp.post("/models/<name>/versions/<version>/transform")
def transform(name: str, version: str | None = None) -> dict[str, Any]:
    """``{"instances": [...]}`` -> an Open Inference Protocol infer request for that exact version."""
    preprocessor = _preprocessor(name, version)
    result = preprocessor.run(read_json(), current_app.config["MODELGATE_MAX_ROWS"])
    return preprocessor.infer_request(result, g.request_id)


@bp.get("/models/<name>/schema")
@bp.get("/models/<name>/versions/<version>/schema")
def schema(name: str, version: str | None = None) -> dict[str, Any]:
    """The JSON Schema of one instance, with an example."""
    return _preprocessor(name, version).json_schema()


@bp.get("/models/<name>/versions/<version>/contract")
def contract(name: str, version: str) -> dict[str, Any]:
    """The feature contract, its fingerprint, and which transform path serves this version."""
    preprocessor = _preprocessor(name, version)
    return {
        "model": name,
        "version": preprocessor.version,
        "contract_fingerprint": preprocessor.fingerprint,
        "contract": preprocessor.contract,
        "transformed_width": preprocessor.width,
        "transform": {"path": preprocessor.transform.kind, "note": preprocessor.transform.note},
    }
