"""Settings of the preprocessing service (environment variables, validated at start-up)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.config import CommonSettings


class PreprocessingSettings(CommonSettings):
    """``PREPROCESSING_PORT`` and the preprocessing service's own knobs, on top of the common settings."""

    preprocessing_port: int = Field(default=8001, ge=1, le=65535)
    #: What to do with instance fields that are not features: refuse them (422) or drop them.
    unknown_fields: Literal["raise", "exclude"] = "raise"
    #: Replay fitted transforms with NumPy where proven equal to scikit-learn (else scikit-learn runs).
    compile_transforms: bool = True
    #: Count accepted values into each feature's training bins (modelgate_feature_values_total), for drift.
    drift_metrics: bool = True
    #: Seconds between moves of those counts from each worker's memory to its metrics.
    drift_flush_seconds: float = Field(default=5.0, gt=0, le=300)
    #: Model versions kept loaded; the least recently used beyond this are dropped.
    preprocessing_cache_size: int = Field(default=64, ge=1, le=10_000)
