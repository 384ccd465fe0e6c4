# The two commands a new user runs: `make run` and `make test`. Everything else is setup.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_WORKERS ?= 2

.PHONY: run test lint bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Conveyor needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q -c requirements.lock -e '.[local]'
	@touch $@

$(VENV)/.test-deps: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q -c requirements.lock -e '.[local,test]'
	@touch $@

## Set everything up and start the whole shop (storefront, workers, relay, Redis, localstripe).
run: $(VENV)/.run-deps
	$(BIN)/conveyor run

## Set everything up and run the whole test suite against PostgreSQL and Redis.
test: $(VENV)/.test-deps
	scripts/ensure-test-services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy

## Benchmarks (not part of the test run); figures go to docs/benchmarks.md.
bench: $(VENV)/.test-deps
	scripts/ensure-test-services
	$(BIN)/python bench/storefront.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
