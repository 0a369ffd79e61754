# modelgate images, one target per service, built from this one file:
#
#   docker build --target gateway       -t modelgate-gateway .
#   docker build --target preprocessing -t modelgate-preprocessing .
#   docker build --target model         -t modelgate-model .
#
# Each image holds one service package plus shared/ (the services never import each other), and a virtual
# environment installed from requirements/runtime.txt: the runtime part of requirements/lock.txt, with
# hashes. No compiler, no pip, no secrets; gunicorn runs as an unprivileged user with the same config file
# local mode uses. The model registry is a volume: nothing is trained at build time.
# The base is pinned to a patch release; pin its digest too (FROM ...@sha256:...) where your registry allows.

# --- builder: the virtual environment, in a layer that changes only with requirements/runtime.txt ---
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
COPY requirements/runtime.txt ./
# Every dependency ships a wheel for linux/amd64, so nothing is compiled; --require-hashes refuses any
# file whose sha256 is not the one locked. (No BuildKit-only syntax: the Docker SDK's builder, used by
# tests/deploy/test_compose_smoke.py, builds this file too.)
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary=:all: -r runtime.txt \
    && /opt/venv/bin/python -m pip uninstall --yes pip

# --- metadata: a dist-info holding only the project's version, so importlib.metadata.version("modelgate")
# (OIP server metadata, OpenAPI) answers it although the code is copied, not installed. A stage of its own,
# so an edit of pyproject.toml rebuilds this, not the virtual environment's layer.
FROM python:3.11.14-slim-bookworm AS metadata
WORKDIR /build
COPY pyproject.toml ./
RUN python -c "import tomllib, pathlib; v = tomllib.load(open('pyproject.toml', 'rb'))['project']['version']; d = pathlib.Path('/metadata', f'modelgate-{v}.dist-info'); d.mkdir(parents=True); (d / 'METADATA').write_text(f'Metadata-Version: 2.1\\nName: modelgate\\nVersion: {v}\\n'); (d / 'RECORD').write_text('')"

# --- runtime: what every service image shares ---
FROM python:3.11.14-slim-bookworm AS runtime

# A fixed uid/gid, 10001 (also in USER below and in the Kubernetes securityContext), so files in the
# registry volume keep one owner across images and restarts.
RUN groupadd --system --gid 10001 modelgate \
    && useradd --system --uid 10001 --gid modelgate --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin modelgate \
    && install --directory --owner 10001 --group 10001 --mode 0755 /var/lib/modelgate/models

COPY --from=builder /opt/venv /opt/venv
COPY --from=metadata /metadata/ /opt/venv/lib/python3.11/site-packages/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELGATE_ENV=production \
    MODEL_REGISTRY=/var/lib/modelgate/models \
    BIND_HOST=0.0.0.0 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/modelgate-metrics

# The code is owned by root: the service user can read it, not change it. The registry
# (/var/lib/modelgate/models) is mounted by compose or Kubernetes, read-only where only read.
WORKDIR /app
COPY shared/ /app/shared/

# --- gateway (port 8000): auth, rate limits, routing ---
FROM runtime AS gateway
COPY gateway/ /app/gateway/
RUN python -m compileall -q /app
ENV MODELGATE_SERVICE=gateway \
    GATEWAY_PORT=8000
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['GATEWAY_PORT'] + '/ready', timeout=4)"]
CMD ["gunicorn", "--config", "python:shared.gunicorn_conf", "gateway.wsgi:app"]

# --- preprocessing service (port 8001): raw records -> OIP infer requests ---
FROM runtime AS preprocessing
COPY preprocessing_service/ /app/preprocessing_service/
RUN python -m compileall -q /app
ENV MODELGATE_SERVICE=preprocessing \
    PREPROCESSING_PORT=8001
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PREPROCESSING_PORT'] + '/ready', timeout=4)"]
CMD ["gunicorn", "--config", "python:shared.gunicorn_conf", "preprocessing_service.wsgi:app"]

# --- model service (port 8002): registry and inference; also the `modelgate` command line ---
#   docker run --rm -v REGISTRY:/var/lib/modelgate/models -e MODEL_SIGNING_KEY modelgate-model \
#       python -m model_service.cli train --demo all --if-missing
FROM runtime AS model
COPY model_service/ /app/model_service/
RUN python -m compileall -q /app
ENV MODELGATE_SERVICE=model \
    MODEL_PORT=8002
USER 10001:10001
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['MODEL_PORT'] + '/ready', timeout=4)"]
CMD ["gunicorn", "--config", "python:shared.gunicorn_conf", "model_service.wsgi:app"]
