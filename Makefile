# The two commands a new user needs: `make run` and `make test`.
# Both create .venv from pyproject.toml on first use; only Python >= 3.11 is required.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test test-fast test-system lint bench dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/hub demo

# All three tiers: unit (no I/O), integration (in-process apps), system (subprocesses, real
# Prometheus, Redis, SecantusDB, Chromium).
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

# Unit and integration tiers only: under a minute, no external programs.
test-fast: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/unit tests/integration

# The system tier alone (CI runs it a second time under a CPU hog).
test-system: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/system

# ruff and mypy over hub/ (rules in pyproject.toml).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check hub
	$(BIN)/mypy

bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.fanout.run

# The wheel and sdist a user installs (`pip install dist/hub-*.whl`); both carry web/.
dist: $(VENV)/.dev-installed
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
