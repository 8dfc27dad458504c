# Every target bootstraps .venv itself: a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m flujo_actors.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test-fast: $(STAMP)
	FLUJO_PROFILE=$${FLUJO_PROFILE:-dev} $(BIN)/pytest -q -m "not slow and not ray"

test: lint typecheck
	FLUJO_PROFILE=$${FLUJO_PROFILE:-ci} $(BIN)/pytest -q -m "not ray"

bench: $(STAMP)
	$(BIN)/python -m flujo_actors.bench run --quick --json benchmarks/results/latest.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
