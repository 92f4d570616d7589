# Each user-facing target sets up its own virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test test-fast lint format bench clean

# Serving only needs the base dependencies (no torch: the int8 network through OpenVINO), plus
# the torch runtime where a GPU answers; a virtual environment set up for the tests has both.
SERVE_STAMP := $(VENV)/.serve-installed
SERVE_EXTRAS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),[torch],)

$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -e ./client
	touch $(STAMP)

$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".$(SERVE_EXTRAS)"
	touch $(SERVE_STAMP)

setup: $(STAMP)

serve: $(if $(wildcard $(STAMP)),$(STAMP),$(SERVE_STAMP))
	$(PY) -m app --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

# The unit and API tests: no real server, training run or long load (those are marked slow).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not container"

lint: $(STAMP)
	$(PY) -m ruff check app model tests client
	$(PY) -m ruff format --check app model tests client
	$(PY) -m mypy app model client/src

format: $(STAMP)
	$(PY) -m ruff format app model tests client
	$(PY) -m ruff check --fix app model tests client

# VOCDEVKIT=folder (its VOC2007 val JPEGs) or JPEGS=folder of *.jpg; neither: the development
# machine's ../shared copy.
bench: $(STAMP)
	$(PY) tests/benchmarks/bench_service.py $(if $(VOCDEVKIT),--data $(VOCDEVKIT)) $(if $(JPEGS),--jpegs $(JPEGS))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
