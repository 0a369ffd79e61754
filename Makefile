# Thin aliases; the logic lives in the project's Python code and config files.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROMTOOL := $(BIN)/promtool

.PHONY: help install tools lock test unit lint format demo serve-model serve-preprocessing up down token bench images clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP) ## create .venv and install the project with its locked dependencies

# promtool, from the distribution's prometheus package, unpacked into .venv/bin (only when missing).
$(PROMTOOL): | $(STAMP)
	compose/install-promtool.sh $@

tools: $(STAMP) $(PROMTOOL) ## install what the deployment checks need (hadolint & co. come with install)

lock: $(STAMP) ## re-pin every dependency from pyproject.toml into requirements/lock.txt (+ the images' runtime.txt)
	$(BIN)/python -m pip install --quiet "uv==0.13.8"
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform linux \
		--no-header -o requirements/lock.txt
	# The images install only the runtime part of the same resolution, with hashes (pip --require-hashes).
	$(BIN)/uv pip compile pyproject.toml --constraint requirements/lock.txt --generate-hashes \
		--python-version 3.11 --python-platform linux --no-header -o requirements/runtime.txt

lint: $(STAMP) $(PROMTOOL) ## ruff, mypy and the deployment checks (compose/lint.sh); fails on any finding
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict compose/local/stack.py
	compose/lint.sh all

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(STAMP) $(PROMTOOL) ## the test suite without the lint step
	$(BIN)/pytest

test: $(STAMP) lint unit ## from a fresh clone: install, lint, run the whole suite

up: $(STAMP) ## start the whole stack (docker compose with an engine, else local gunicorn processes) and wait until ready
	@if [ -f docker-compose.yml ] && docker info >/dev/null 2>&1; then \
		compose/compose.sh up --detach --wait --build; \
	else \
		$(BIN)/python compose/local/stack.py up; \
	fi

down: ## stop what make up started, either way
	@if [ -f docker-compose.yml ] && docker info >/dev/null 2>&1 && [ -x $(BIN)/python ]; then compose/compose.sh down; fi
	@if [ -x $(BIN)/python ]; then $(BIN)/python compose/local/stack.py down; fi

SUB ?= local-user
SCOPE ?= predict
token: $(STAMP) ## print a signed JWT for local use (SUB=, SCOPE= optional)
	@$(BIN)/modelgate token --sub "$(SUB)" --scope "$(SCOPE)"

BENCH_DURATION ?= 10
BENCH_ROUNDS ?= 3
bench: $(STAMP) ## wrk against a fresh stack and a single-app baseline (about 10 minutes); writes docs/benchmark.md
	@command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	$(BIN)/python tests/load/bench.py --duration $(BENCH_DURATION) --rounds $(BENCH_ROUNDS)

demo: $(STAMP) ## train and register the demo models into MODEL_REGISTRY (./models) unless already there
	$(BIN)/modelgate train --demo all --if-missing

serve-model: demo ## run the model service alone, in the foreground, on MODEL_PORT (8002)
	MODELGATE_SERVICE=model $(BIN)/gunicorn --config python:shared.gunicorn_conf model_service.wsgi:app

serve-preprocessing: demo ## run the preprocessing service alone, in the foreground, on PREPROCESSING_PORT (8001)
	MODELGATE_SERVICE=preprocessing $(BIN)/gunicorn --config python:shared.gunicorn_conf preprocessing_service.wsgi:app

images: ## build the three service images (needs a Docker engine)
	for target in gateway preprocessing model; do \
		docker build --target $$target --tag modelgate-$$target:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) . || exit 1; \
	done

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
