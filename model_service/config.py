"""Settings of the model service (environment variables, validated at start-up)."""

from __future__ import annotations

from pydantic import Field

from shared.config import CommonSettings


class ModelServiceSettings(CommonSettings):
    """``MODEL_PORT`` and the model service's own knobs, on top of the common settings."""

    model_port: int = Field(default=8002, ge=1, le=65535)
    #: Serve through onnxruntime where conversion and parity succeeded (else scikit-learn).
    model_use_onnx: bool = True
    #: Threads onnxruntime may use per inference call; 1 suits several workers on a small host.
    onnx_threads: int = Field(default=1, ge=1, le=64)
    #: Seconds between checks of the registry for newly deployed versions (0 disables the check).
    registry_refresh_seconds: float = Field(default=2.0, ge=0.0, le=3600.0)
    #: Load models in a background thread so the worker answers /ready (503) while they load.
    load_in_background: bool = True
    #: Versions a worker keeps loaded besides the deployed ones (asked for by number; least recent unloaded).
    model_extra_versions: int = Field(default=4, ge=0, le=1000)
    #: Quality gate: the held-out accuracy (classifiers) and R² (regressors) a new version must reach.
    quality_gate_min_accuracy: float = Field(default=0.7, ge=0.0, le=1.0)
    quality_gate_min_r2: float = Field(default=0.3, ge=-1.0, le=1.0)
