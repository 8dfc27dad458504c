# Every target bootstraps .venv itself: a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: install demo test test-fast test-ray lint typecheck bench clean

# The process extra is tiny (trio-parallel + cloudpickle) and bench is rich + matplotlib:
# install both so the process pool's contract tests and the harness's live display and
# --plot tests run everywhere (they fail, never skip, when their extra is missing).
# The postgres extra (psycopg + pool) is what the PostgreSQL backend's tests use; they run
# against a throwaway server the test session starts (tests/pg_server.py).
# Ray is large: only test-ray installs it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,process,bench,postgres]'
	touch $(STAMP)

$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,process,bench,postgres,ray]'
	touch $(RAY_STAMP)

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

# The Ray executor's tests: one local cluster for the session (a head node and two worker
# nodes; tests/executors/conftest.py), about 35 s of CPU in all.
test-ray: $(RAY_STAMP)
	RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled $(BIN)/pytest -q -m ray tests/executors

test: lint typecheck
	FLUJO_PROFILE=$${FLUJO_PROFILE:-ci} $(BIN)/pytest -q -m "not ray"
	$(MAKE) test-ray

bench: $(STAMP)
	$(BIN)/python -m flujo_actors.bench run --quick --json benchmarks/results/latest.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
