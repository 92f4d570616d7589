# Each user-facing target sets up its own virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test test-fast lint format bench clean

$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -e ./client
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(PY) -m uvicorn app.main:app --http app.protocol:GuardedHttpTools --host $(HOST) --port $(PORT)

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
