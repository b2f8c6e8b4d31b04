# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test bench install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## make run: set up .venv and run the main job (EM vs Adam on Old Faithful, logged to ./mlflow.db)
run: $(VENV)/.installed
	$(PY) experiments/compare.py

## make test: set up .venv with the test extra and run every test
test: $(VENV)/.installed-test
	$(PY) -m pytest -q

## make bench: side-by-side timings against scikit-learn (minutes, on demand)
bench: $(VENV)/.installed-bench
	$(PY) benchmarks/em.py

clean:
	rm -rf $(VENV) mlruns mlflow.db outputs multirun
