# airflow-predictive: everything a fresh machine needs goes through these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
AIRFLOW_VERSION ?= 3.3.2
SHARED_DATA ?= ../shared/data
export AIRFLOW_PREDICTIVE_TEST_PG_PORT ?= 55432
# two pytest-xdist workers: the real-Airflow modules mostly wait on their processes
TEST_WORKERS ?= 2

.PHONY: help venv system-deps install lint typecheck contracts test unit demo bench clean pg-start pg-stop

help:
	@echo "make demo   - run the example DAGs through real Airflow and print the recorded curves"
	@echo "make test   - lint, type-check, import contracts, tests (SQLite + real PostgreSQL)"
	@echo "make bench  - benchmarks on ../shared/data (profiler, backends, sampler overhead)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv

system-deps:
	@bash scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml $(BIN)/python
	UV_NATIVE_TLS=1 $(UV) pip install --python $(BIN)/python -e ".[all,dev]" \
		"apache-airflow==$(AIRFLOW_VERSION)"
	touch $@

venv install: system-deps $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

contracts: install
	$(BIN)/lint-imports

pg-start: install
	@bash scripts/pg.sh start

pg-stop:
	@bash scripts/pg.sh stop

test: install lint typecheck contracts pg-start
	@set -o pipefail; \
	AIRFLOW_PREDICTIVE_TEST_PG_URL="$$(bash scripts/pg.sh url)" $(BIN)/pytest -q -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS); \
	rc=$$?; bash scripts/pg.sh stop; exit $$rc

unit: install
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	@bash scripts/bench.sh "$(SHARED_DATA)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
