# One command per task. `run`, `test`, `bench` and `lint` create .venv when it is missing or stale.
SHELL := /bin/sh
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-314 dist bench bench-density lint clean fleet fleet-deps

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
	-deploy/fleet/install-deps $(BIN)/python
	$(BIN)/python -m pytest

# The suite under CPython 3.14 in a Debian sid tree (root; builds the tree on first use).
test-314:
	.ci/test-python314

# dist/edge-x86_64.pyz, dist/edge-aarch64.pyz (shiv zipapps for Debian 13's python3) and
# dist/SHA256SUMS; deploy/install.sh --artifact installs one. Wheels are cached in $EDGE_DIST_CACHE
# (default ~/.cache/edge-dist). `make test` installs the x86_64 one into a Debian 13 tree
# (tests/deploy/test_dist_debian.py) that .ci/debian-trixie-tree builds once into $EDGE_TRIXIE_ROOT
# (default /var/tmp/edge-trixie; about a minute); `pytest -m "not debian_tree"` leaves it out.
dist: $(STAMP)
	$(BIN)/python deploy/dist.py --out dist

bench: $(STAMP)
	$(BIN)/python loadtest/bench.py

# The network-fault fleet (root): every scenario in deploy/fleet/scenarios/ but the 5-node smoke
# one (that is in `make test`); each prints its table and writes docs/perf/fleet/NAME.json.
FLEET_SCENARIOS := clean clean-100 lossy lossy-100 partition origin-down flap

fleet-deps: $(STAMP)
	deploy/fleet/install-deps $(BIN)/python

fleet: fleet-deps
	@status=0; for name in $(FLEET_SCENARIOS); do \
		echo "== $$name"; \
		PYTHONPATH=deploy/fleet $(BIN)/python -m edgefleet run deploy/fleet/scenarios/$$name.toml \
			--out docs/perf/fleet/$$name.json || status=1; \
	done; exit $$status
# Memory per instance and a node with 3,000 functions (about 3.5 minutes and 9 GB on the 2-core VM).
bench-density: $(STAMP)
	$(BIN)/python loadtest/density.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist
