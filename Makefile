# Set-up and entry points. Every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint lab serve mlflow-ui clean lock

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing pinned dependencies into $(VENV) (first time: about 2-3 minutes)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

## demo: run the research pipeline (dvc repro) on the embedded defaults and show the champion model
demo: $(STAMP)
	@test -d .git || { echo "make demo needs a git checkout (DVC tracks pipeline state in git)"; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipelines.summary

## test: the whole test suite (needs PostgreSQL and RabbitMQ for the service tests)
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

## lab: JupyterLab on the notebooks
lab: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab --notebook-dir=.

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
