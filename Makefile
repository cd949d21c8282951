# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELS := $(VENV)/wheels
WHEELS_STAMP := $(WHEELS)/.downloaded
SERVER_WHEELS := flask fastapi uvicorn websockets openpyxl

.PHONY: install run test lint services bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ServiceBay needs Python 3.11 or newer: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Wheels for the hosted-server tests' apps and the spreadsheets connector (openpyxl):
# pip installs them offline (PIP_NO_INDEX). Fetched again when this list changes.
$(WHEELS_STAMP): $(STAMP) Makefile
	$(BIN)/pip download --quiet -d $(WHEELS) $(SERVER_WHEELS)
	@touch $(WHEELS_STAMP)

install: $(STAMP) $(WHEELS_STAMP)

run: install
	$(BIN)/bay demo

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

services:
	@scripts/ensure-services

test: lint services
	$(BIN)/pytest -n auto

# Every benchmark in turn (bench/README.md): not part of `make test`, never timed in tests.
bench: install services
	@command -v wrk >/dev/null || { echo "the benchmarks need wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/sql_gateway.py
	$(BIN)/python bench/webhook_latency.py
	$(BIN)/python bench/runner_latency.py
	$(BIN)/python bench/run_throughput.py --runs 1000 --in-flight 16 --workers 16
	$(BIN)/python bench/scheduler_lag.py

clean:
	rm -rf $(VENV) .bay-demo .pytest_cache .mypy_cache .ruff_cache
