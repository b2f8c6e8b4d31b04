# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test test-all test-fast bench install install-test install-cluster tracking-server clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-cluster: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[cluster]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-cluster: $(VENV)/.installed-cluster

## make run: set up .venv and run the main job (EM vs Adam on Old Faithful, logged to ./mlflow.db)
run: $(VENV)/.installed
	$(PY) experiments/compare.py

# Test files run on TEST_WORKERS processes (pytest-xdist), each file whole on one worker
# (its module fixtures, servers and compiled programs shared as when run alone).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

## make test: set up .venv with the test extra and run every test
test: $(VENV)/.installed-test
	$(PYTEST)

## make test-all: every test, those marked slow included (today the same set as `make test`;
##   the -m here overrides any -m "not slow" that addopts may get later)
test-all: $(VENV)/.installed-test
	$(PYTEST) -m "slow or not slow"

## make test-fast: only the tests not marked slow
test-fast: $(VENV)/.installed-test
	$(PYTEST) -m "not slow"

## make tracking-server: MLflow server on a PostgreSQL store in .tracking/ (docs/cluster.md)
##   make tracking-server TRACKING_HOST=0.0.0.0 TRACKING_ARGS="--allowed-hosts mlflow.lab.example:5000"
TRACKING_DIR  ?= .tracking
TRACKING_HOST ?= 127.0.0.1
TRACKING_PORT ?= 5000
TRACKING_ARGS ?=
tracking-server: $(VENV)/.installed-cluster
	$(PY) scripts/tracking_server.py --dir $(TRACKING_DIR) --host $(TRACKING_HOST) \
	    --port $(TRACKING_PORT) -- $(TRACKING_ARGS)

## make bench: side-by-side timings against scikit-learn (minutes, on demand)
bench: $(VENV)/.installed-bench
	$(PY) benchmarks/em.py

clean:
	rm -rf $(VENV) mlruns mlflow.db outputs multirun
