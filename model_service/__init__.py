"""The model service: a registry of signed, versioned scikit-learn models served over the Open Inference Protocol."""

from __future__ import annotations

from flask import Flask

from model_service.config import ModelServiceSettings
from model_service.serving import STOP_WAIT_SECONDS, ModelServer
from shared.config import load_settings
from shared.logging import configure_logging
from shared.service import init_service

SERVICE = "model"


def create_app(settings: ModelServiceSettings | None = None) -> Flask:
    """Build the model service. Models load in a background thread; ``/ready`` is 503 until they have."""
    settings = settings or load_settings(ModelServiceSettings)
    configure_logging(SERVICE, settings.log_level)
    app = Flask(__name__)
    server = ModelServer.from_settings(settings)
    app.extensions["modelgate.models"] = server
    app.extensions["modelgate.settings"] = settings
    init_service(app, SERVICE, server.readiness, settings)

    from model_service.routes import oip, registry

    app.register_blueprint(oip.bp)
    app.register_blueprint(registry.bp)
    server.start(background=settings.load_in_background)
    app.extensions["modelgate.on_exit"] = [lambda budget: server.stop(wait=min(budget, STOP_WAIT_SECONDS))]
    return app
