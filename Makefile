# Clicktrail: `make run` to run it, `make test` to test it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration lint typecheck migrate topics lock clean

help:
	@echo "make run     run the whole pipeline locally (API :8000, Flower :5555, Kafka :9092)"
	@echo "make test    the whole test suite against real Redis, Postgres, Kafka and Celery"
	@echo "make lint    ruff; make typecheck: mypy"
	@echo "make migrate apply database migrations; make topics: create Kafka topics"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m clicktrail run

test: $(VENV)/.installed-dev
	$(PY) -m pytest

test-unit: $(VENV)/.installed-dev
	$(PY) -m pytest tests/unit

test-integration: $(VENV)/.installed-dev
	$(PY) -m pytest tests/integration

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

migrate: $(VENV)/.installed
	$(PY) -m clicktrail migrate

topics: $(VENV)/.installed
	$(PY) -m clicktrail topics

# Re-pin every dependency after editing requirements*.in.
lock: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
