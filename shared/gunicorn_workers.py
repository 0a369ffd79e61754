"""gunicorn's gthread worker with problem+json protocol errors (model and preprocessing services).

See ``shared.gunicorn_errors``; the gateway's gevent worker is in ``shared.gunicorn_gevent``.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker

from shared.gunicorn_errors import ProblemErrors


class ThreadWorker(ProblemErrors, _ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with problem+json protocol errors."""
