# tabml: two commands. `make run` sets up and starts the demo; `make test` sets up and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TABML_HOME ?= $(CURDIR)/.tabml
DAGSTER_HOME ?= $(TABML_HOME)/dagster_home
HOST ?= 127.0.0.1
PORT ?= 3000
export TABML_HOME DAGSTER_HOME

.PHONY: install system-deps run seed test test-fast lint typecheck bench clean

# Debian packages the tests drive for real: PostgreSQL 15 (production instance test) and
# Chromium (the UI test). Installed only where missing; CI runs as root, elsewhere via sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PG_BIN := /usr/lib/postgresql/15/bin
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: infra/dagster/dagster.dev.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

seed: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m tabml_assets.seed --skip-if-seeded

run: seed
	@echo "tabml UI on http://$(HOST):$(PORT) (Ctrl-C to stop)"
	$(BIN)/dagster dev -h $(HOST) -p $(PORT) -w workspace.yaml

$(PG_BIN)/initdb:
	$(SUDO) apt-get update -qq && $(APT_INSTALL) postgresql

/usr/bin/chromium:
	$(SUDO) apt-get update -qq && $(APT_INSTALL) chromium

system-deps: $(PG_BIN)/initdb /usr/bin/chromium

lint: install
	$(BIN)/ruff check tabml_assets tabml_assets_tests benchmarks infra/deploy

typecheck: install
	$(BIN)/mypy tabml_assets

# One worker more than cores: with one OpenMP thread per test process the suite waits (on
# sensors, servers, subprocesses) as much as it computes; 3 workers on 2 cores: 9 min 54 s vs
# 11 min 53 s with 2. Worksteal keeps them busy when a long end-to-end test lands late.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: install system-deps lint typecheck
	$(BIN)/python -m pytest -q -ra -n $(PYTEST_WORKERS) --dist worksteal

# The fast loop while editing: everything but the tests that start servers or browsers.
test-fast: install
	$(BIN)/python -m pytest -q -ra -n $(PYTEST_WORKERS) --dist worksteal -m "not slow"

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf .tabml .pytest_cache .ruff_cache
