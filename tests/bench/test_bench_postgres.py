"""The PostgreSQL persistence scenarios (benchmarks/bench_postgres.py): measured, or "unavailable".

Figures are not asserted (speed is for `make bench`); what is: a case measures
on a real throwaway server with its SQLite reference and raw baseline, and a
machine without PostgreSQL binaries (or without the postgres extra) gets an
"unavailable" row with the reason, not an error and not a silent skip.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flujo_actors.bench.harness import MeasureOptions, run_case
from flujo_actors.testing import pg_server
from flujo_actors.testing.pg_server import PostgresNotInstalled

if TYPE_CHECKING:
    from collections.abc import Iterator

FAST = MeasureOptions(repeat=1, min_time_s=0.001, budget_s=1.0, quick=True)
MODULE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_postgres.py"


@pytest.fixture
def bench() -> Iterator[Any]:
    """A fresh copy of the scenario module (its own server state); its server removed after."""
    spec = importlib.util.spec_from_file_location("bench_postgres_under_test", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        if module._server is not None:
            module._server.destroy()


def _scenario(bench: Any, name: str) -> Any:
    [found] = [s for s in bench.SCENARIOS if s.name == name]
    return found


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["persistence.postgres", "persistence.postgres_concurrent"])
def test_a_case_measures_on_a_throwaway_server(bench: Any, name: str) -> None:
    result = run_case(_scenario(bench, name), 3, FAST)
    assert (result.status, result.error) == ("ok", None)
    assert result.figure is not None and result.figure.median > 0
    assert result.reference is not None and result.baseline is not None
    assert bench._server is not None and bench._server.is_running()


def test_without_postgresql_binaries_the_cases_are_unavailable_with_the_reason(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_binaries() -> str:
        raise PostgresNotInstalled("none found (test)")

    monkeypatch.setattr(pg_server, "find_bindir", no_binaries)
    for scenario in bench.SCENARIOS:
        result = run_case(scenario, 3, FAST)
        assert result.status == "unavailable"
        assert result.error is not None
        assert result.error.startswith(
            "Unavailable: no PostgreSQL server binaries on this machine: none found (test) "
            "(at bench_postgres.py:"
        )
    assert bench._server is None


def test_without_the_postgres_extra_the_cases_are_unavailable_with_the_fix(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    result = run_case(_scenario(bench, "persistence.postgres"), 3, FAST)
    assert result.status == "unavailable"
    assert result.error is not None
    assert result.error.startswith("Unavailable: the postgres extra is not installed (")
    assert "pip install 'flujo-actors[postgres]' (at bench_postgres.py:" in result.error
