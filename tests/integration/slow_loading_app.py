"""The model service with loads that take 1.5 s outside the GIL, for the shutdown test (run under gunicorn).

The sleep stands in for onnxruntime building a session, which also runs without the GIL, so the test
can stop a worker in the middle of a load every time instead of once in fifty starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from model_service import create_app
from model_service.registry import Registry

MARKER = Path(os.environ["SLOW_LOAD_MARKER"])
_real_load = Registry.load


def _slow_load(self: Registry, name: str, *args: Any, **kwargs: Any) -> Any:
    with MARKER.open("a") as out:
        out.write(f"start {name}\n")
    time.sleep(1.5)
    model = _real_load(self, name, *args, **kwargs)
    with MARKER.open("a") as out:
        out.write(f"end {name}\n")
    return model


Registry.load = _slow_load  # type: ignore[method-assign]
app = create_app()
