# One command per task. `run`, `test`, `bench` and `lint` create .venv when it is missing or stale.
SHELL := /bin/sh
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-314 bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@py=$$(deploy/find-python) || exit 1; \
	if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then \
		echo "creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV) || exit 1; \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/edge up

test: $(STAMP)
	$(BIN)/python -m pytest

# The suite under CPython 3.14 in a Debian sid tree (root; builds the tree on first use).
test-314:
	.ci/test-python314

bench: $(STAMP)
	$(BIN)/python loadtest/bench.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
