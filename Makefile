# IM Edge: developer entry points. `make run` starts a server, `make test` checks everything.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
SRC := src tests

.PHONY: all venv run test lint fmt bench system-deps clean distclean

all: test

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: venv
	$(BIN)/imedge serve $(ARGS)

system-deps:
	scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv system-deps lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The benchmarks in bench/ (not part of `make test`): QUICK=1 for a smaller run.
BENCH_ARGS ?= $(if $(QUICK),--count 10000)
bench: venv
	$(BIN)/python bench/directory_sync.py $(BENCH_ARGS)

fmt: venv
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist artifacts src/*.egg-info
	find src tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
