"""The preprocessing service: raw instances -> validated, transformed features for one model version."""

from __future__ import annotations

import threading

from flask import Flask

from preprocessing_service.config import PreprocessingSettings
from preprocessing_service.drift import DriftRecorder
from preprocessing_service.versions import Preprocessors
from shared.config import load_settings
from shared.health import Check
from shared.logging import configure_logging
from shared.service import init_service

SERVICE = "preprocessing"


def create_app(settings: PreprocessingSettings | None = None, *, warm: bool = True) -> Flask:
    """Build the preprocessing service; deployed versions are warmed in the background."""
    settings = settings or load_settings(PreprocessingSettings)
    configure_logging(SERVICE, settings.log_level)
    app = Flask(__name__)
    drift = DriftRecorder(settings.drift_flush_seconds) if settings.drift_metrics else None
    store = Preprocessors(
        settings.model_registry,
        settings.signing_key(),
        unknown=settings.unknown_fields,
        compile_transforms=settings.compile_transforms,
        capacity=settings.preprocessing_cache_size,
        drift=drift,
    )
    app.extensions["modelgate.preprocessors"] = store
    if drift is not None:
        # The counts of the last seconds reach the metrics files before the worker goes (gunicorn_conf).
        app.extensions["modelgate.on_exit"] = [lambda budget: drift.stop(wait=min(budget, 5.0))]
    app.config["MODELGATE_MAX_ROWS"] = settings.max_batch_rows

    def readiness() -> dict[str, Check]:
        registry_ok = store.root.is_dir()
        data = {"loaded": sorted(f"{p.name}/{p.version}" for p in store.loaded())}
        failed = store.failures()
        if failed:
            data["failed"] = failed  # type: ignore[assignment]
        return {
            "registry": Check(registry_ok, "" if registry_ok else f"{store.root} is not a folder"),
            "models": Check(True, "", data),
        }

    init_service(app, SERVICE, readiness, settings)
    from preprocessing_service.routes import bp

    app.register_blueprint(bp)
    if warm:
        threading.Thread(target=store.warm, name="warm", daemon=True).start()
    return app
