"""gunicorn entry point: ``gunicorn --config python:shared.gunicorn_conf preprocessing_service.wsgi:app``."""

from preprocessing_service import create_app

app = create_app()
