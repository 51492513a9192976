# The two commands a newcomer needs:  `make demo`  and  `make test`  (see README.md).
SHELL := /bin/bash
VENV ?= .venv
# The first interpreter that answers and is 3.11 or newer (Lambda runs 3.13; the code runs on 3.11+).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	  then echo $$p; break; fi; done)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit sam-check bench bench-quick clean

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: Python 3.11 or newer is needed (3.13 matches the Lambda runtime); install one and re-run, or pass PYTHON=/path/to/python3.x" >&2; exit 1; fi
	@echo "Setting up $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

## 1. The demo: the real handlers fed with events/, against a local Heap emulator and moto.
demo: $(STAMP)
	$(BIN)/heap-forwarder demo

## 2. The whole test suite: lint, types, tests, the SAM template checks, the benchmark smoke runs.
test: $(STAMP) lint typecheck unit sam-check bench-quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  echo "NOTE: no chromium/chromedriver on the PATH: the studio's browser test will be SKIPPED" \
	       "(install: sudo apt-get install -y chromium chromium-driver)"; fi
	$(BIN)/pytest -q

sam-check:
	bash .ci/sam-check

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .venv-sam .aws-sam .pytest_cache .mypy_cache .ruff_cache
