"""gunicorn entry point: ``gunicorn --config python:shared.gunicorn_conf gateway.wsgi:app``."""

from gateway import create_app

app = create_app()
