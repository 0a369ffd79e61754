"""What both services need to know about a fitted scikit-learn model: its parts and its input frame.

The preprocessing service runs every step before the final estimator; the model service runs the final
estimator (and, for raw-feature requests, the steps too). Both split a Pipeline the same way and build
the same training-like input from raw records, so training and serving agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def library_versions() -> dict[str, str]:
    """Versions of Python, scikit-learn and NumPy in this process."""
    import platform

    import sklearn

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def split_pipeline(model: Any) -> tuple[Any | None, Any]:
    """(every step before the final estimator as one transformer, or None; the final estimator)."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and len(model.steps) > 1:
        return model[:-1], model[-1]
    if isinstance(model, Pipeline):
        return None, model[-1]
    return None, model


def to_dense_float(matrix: Any) -> np.ndarray:
    """A transformer's output as a dense C-ordered float64 matrix (sparse one-hot output included)."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.ascontiguousarray(np.asarray(matrix, dtype=np.float64))


def records_frame(records: list[dict[str, Any]], contract: dict[str, Any]) -> Any:
    """A pandas frame of raw records in contract order, with training-like dtypes (None -> NaN)."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for feature in contract["features"]:
        name = feature["name"]
        values = [record.get(name) for record in records]
        if feature["type"] in ("number", "integer"):
            columns[name] = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
            if feature["type"] == "integer" and not feature["nullable"]:
                columns[name] = columns[name].astype(np.int64)
        elif feature["type"] == "boolean":
            columns[name] = np.asarray(values, dtype=object if any(v is None for v in values) else np.bool_)
        else:
            columns[name] = pd.array([math.nan if v is None else v for v in values], dtype="str")
    return pd.DataFrame(columns)
