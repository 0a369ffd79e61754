"""gunicorn's gevent worker with problem+json protocol errors (the gateway); see ``shared.gunicorn_errors``.

A module of its own so that the gthread services never import gevent (nor the gateway gthread).
"""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventWorker as _GeventWorker

from shared.gunicorn_errors import ProblemErrors


class GeventWorker(ProblemErrors, _GeventWorker):  # type: ignore[misc]
    """The gateway's worker."""
