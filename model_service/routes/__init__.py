"""HTTP routes of the model service: the Open Inference Protocol (``/v2``) and the registry (``/v1``)."""

from __future__ import annotations

from flask import current_app

from model_service.serving import ModelServer


def models() -> ModelServer:
    """The worker's model server, hung on the app by ``create_app``."""
    server: ModelServer = current_app.extensions["modelgate.models"]
    return server
