# Set-up and entry points. Every target installs what it needs into .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test migrate test-production check lint bench-serve bench-executor fuzz-api lab serve dashboards worker services services-down mlflow-ui clean lock

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing pinned dependencies into $(VENV) (first time: about 2-3 minutes)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | { grep -vE "is ignored: it is neither|Warning|^\s|^$$|!!" || true; }
	@# rfc3987-syntax (from jsonschema[format-nongpl], via jupyter-events) compiles a Lark grammar on import:
	@# 2.7 s added to every process that imports nbformat, papermill or jsonschema. jsonschema uses it
	@# only for optional iri/uri format checks, so it goes.
	$(BIN)/pip uninstall -y -q rfc3987-syntax 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

## demo: run the research pipeline (dvc repro) on the embedded defaults and show the champion model
demo: $(STAMP)
	@test -d .git || { echo "make demo needs a git checkout (DVC tracks pipeline state in git)"; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipelines.summary

## test: the whole test suite (needs PostgreSQL and RabbitMQ for the service tests)
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

## test-production: DVC on S3, MLflow server on PostgreSQL + S3, lineage (part of `make test` too; clones HEAD: commit first)
test-production: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m production tests/production $(PYTEST_ARGS)

## check: are the configured services reachable? each failure names the setting to fix
check: $(STAMP)
	$(BIN)/jobrunner check

## lint: ruff on the Python packages and tests, mypy, and the import layering (lint-imports; docs/index.md)
lint: $(STAMP)
	$(BIN)/ruff check dashboards jobrunner pipelines serve tests bench scripts
	$(BIN)/ruff format --check dashboards jobrunner pipelines serve tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench-serve / bench-executor: benchmarks (not tests); results and commands in docs/benchmarks.md
bench-serve: $(STAMP)
	$(BIN)/python bench/serve_bench.py

bench-executor: $(STAMP)
	$(BIN)/python bench/executor_bench.py

## fuzz-api: schemathesis --checks all against the API for 5 minutes (PostgreSQL + RabbitMQ); FUZZ_ARGS="--max-time 60"
fuzz-api: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/contract_fuzz.py $(FUZZ_ARGS)

## lab: JupyterLab on the project (the venv's kernel `python3` is the default), as root or as a user.
## Prints the URL with its token. LAB_HOST, LAB_PORT, LAB_TOKEN (default: a fresh random one) and LAB_ARGS
## (any other `jupyter lab` flags) change it: `make lab LAB_PORT=9999 LAB_ARGS="--ServerApp.open_browser=True"`
LAB_HOST ?= 127.0.0.1
LAB_PORT ?= 8888
LAB_TOKEN ?=
LAB_ARGS ?=
lab: $(STAMP)
	@token="$(LAB_TOKEN)"; [ -n "$$token" ] || token=$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(16))'); \
	root=""; [ "$$(id -u)" != 0 ] || root="--allow-root"; \
	echo ">> JupyterLab: http://$(LAB_HOST):$(LAB_PORT)/lab?token=$$token   (Ctrl-C stops it; docs/notebooks.md)"; \
	PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/jupyter lab --notebook-dir=. --no-browser \
	  --ServerApp.ip=$(LAB_HOST) --ServerApp.port=$(LAB_PORT) --ServerApp.port_retries=0 \
	  --IdentityProvider.token="$$token" --MappingKernelManager.default_kernel_name=python3 $$root $(LAB_ARGS)

## serve: the prediction and jobs API on the embedded defaults (http://127.0.0.1:8000/docs);
## set SERVE_API_KEYS=<key>:write first (docs/api.md)
serve: $(STAMP)
	$(BIN)/uvicorn serve.app:app --host 127.0.0.1 --port 8000

## dashboards: the Voila dashboards (prediction form, monitoring, job board) on http://127.0.0.1:8866;
## they call the API of `make serve`: set DASHBOARD_API_KEY=<key> (docs/dashboards.md)
dashboards: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/voila notebooks/dashboards --no-browser --port=8866 --Voila.ip=127.0.0.1

## migrate: create or upgrade the job store's schema (JOBRUNNER_DATABASE_URL)
migrate: $(STAMP)
	$(BIN)/jobrunner migrate

## worker: a notebook job worker (needs JOBRUNNER_BROKER_URL for RabbitMQ; see docs/jobs.md)
worker: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jobrunner worker

## services / services-down: a production-like local set (S3 server, MLflow server on PostgreSQL + S3)
services: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

## mlflow-ui: browse runs, notebooks and models of the embedded tracking store
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

## lock: re-resolve requirements.in into requirements.lock (needs the package index)
lock:
	rm -rf /tmp/jr-lock-venv && $(PYTHON) -m venv /tmp/jr-lock-venv
	/tmp/jr-lock-venv/bin/python -m pip install -q -U pip
	/tmp/jr-lock-venv/bin/pip install -q -r requirements.in
	/tmp/jr-lock-venv/bin/pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
