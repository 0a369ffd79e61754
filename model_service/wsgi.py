"""gunicorn entry point: ``gunicorn --config python:shared.gunicorn_conf model_service.wsgi:app``."""

from model_service import create_app

app = create_app()
