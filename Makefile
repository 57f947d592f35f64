# One command per task. `run`, `test`, `bench` and `lint` create .venv when it is missing or stale.
SHELL := /bin/sh
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-314 bench bench-density lint clean

# Creates $(VENV) with a Python >= 3.13 when it is missing or older, then upgrades pip.
define venv
	@py=$$(deploy/find-python) || exit 1; \
	if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then \
		echo "creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV) || exit 1; \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
endef

# `run` needs the runtime dependencies only; `test`, `bench` and `lint` also the test and lint stack
# (which includes the runtime: its stamp stands for both).
RUN_STAMP := $(VENV)/.installed-run

setup: $(STAMP)

$(RUN_STAMP): pyproject.toml
	$(venv)
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(venv)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/edge up

test: $(STAMP)
	$(BIN)/python -m pytest

# The suite under CPython 3.14 in a Debian sid tree (root; builds the tree on first use).
test-314:
	.ci/test-python314

bench: $(STAMP)
	$(BIN)/python loadtest/bench.py

# Memory per instance and a node with 3,000 functions (about 3.5 minutes and 9 GB on the 2-core VM).
bench-density: $(STAMP)
	$(BIN)/python loadtest/density.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
