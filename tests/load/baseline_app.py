"""The benchmark's baseline: one Flask app as most tutorials write it (gunicorn, 4 sync workers, the
scikit-learn Pipeline called per request on a pandas frame, no auth, no limits). Not part of modelgate.

    BASELINE_MODELS=/path/to/dir gunicorn -w 4 -b 127.0.0.1:9000 tests.load.baseline_app:app

``BASELINE_MODELS`` holds ``<name>.joblib`` files (fitted Pipelines written by the benchmark itself).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
MODELS = {path.stem: joblib.load(path) for path in Path(os.environ["BASELINE_MODELS"]).glob("*.joblib")}


@app.post("/predict/<name>")
def predict(name: str) -> Any:
    model = MODELS[name]
    frame = pd.DataFrame(request.get_json()["instances"])
    probabilities = model.predict_proba(frame)
    labels = model.classes_[probabilities.argmax(axis=1)]
    return jsonify(
        predictions=[
            {
                "prediction": str(label),
                "probabilities": dict(zip(map(str, model.classes_), map(float, row), strict=True)),
            }
            for label, row in zip(labels, probabilities, strict=True)
        ]
    )
