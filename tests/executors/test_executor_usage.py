"""Usage and failures read the same on every executor as inline (one ``usage_of`` rule)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import Flujo, InlineExecutor, Step, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@attrs.frozen
class Reported:
    value: Any
    cost_usd: Any = 0
    token_counts: Any = None


# Module level: process workers import these by reference.
def bad_cost(data: Any) -> Reported:
    return Reported(data, cost_usd="abc")


def enum_tokens(data: Any) -> Reported:
    return Reported(data, cost_usd="0.25", token_counts=5000.0)


async def yields_usage(data: Any) -> Any:
    yield "a"
    yield Usage(tokens=12, cost_usd=Decimal("0.5"))
    yield "b"


class Deterministic(ValueError):
    pass


def explode(data: Any) -> Any:
    raise Deterministic(f"cannot handle {data!r}")


@pytest.fixture(params=["inline-executor", "process", pytest.param("ray", marks=pytest.mark.ray)])
async def placement(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    made: Any
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        from flujo_actors.executors.ray import RayExecutor

        made = RayExecutor()
    elif request.param == "process":
        from flujo_actors.executors.process import ProcessExecutor

        made = ProcessExecutor(max_workers=1, worker_type="forkserver")
    else:
        made = InlineExecutor()
    yield made
    await made.aclose()  # the pool outlives the test's trio run otherwise


async def test_a_bad_cost_fails_the_same_everywhere(placement: Any) -> None:
    inline = await Flujo(Step.from_callable(bad_cost, name="llm", max_retries=0)).run_async(1)
    placed = await Flujo(
        Step.from_callable(bad_cost, name="llm", max_retries=0, placement=placement)
    ).run_async(1)
    expected = (
        "UsageReportError: Step 'llm': its output reports cost_usd='abc'; usage must be a finite "
        "number >= 0 (int, float, Decimal or numeric str)."
    )
    assert inline.step_history[-1].feedback == placed.step_history[-1].feedback == expected


async def test_integral_counts_and_stream_usage_count_on_an_executor(placement: Any) -> None:
    pipeline = Step.from_callable(enum_tokens, name="a", placement=placement) >> Step.from_callable(
        yields_usage, name="b", placement=placement
    )
    result = await Flujo(pipeline).run_async(1)
    assert result.output == "ab"
    assert (result.total_tokens, result.total_cost_usd) == (5012, Decimal("0.75"))


async def test_the_traceback_of_a_placed_step_is_the_workers(placement: Any) -> None:
    result = await Flujo(
        Step.from_callable(explode, name="e", max_retries=0, placement=placement)
    ).run_async(7)
    r = result.step_history[-1]
    assert r.metadata["exception_type"] == "test_executor_usage.Deterministic"
    assert 'raise Deterministic(f"cannot handle {data!r}")' in r.metadata["traceback"]
    assert r.metadata["traceback"].count("cannot handle 7") >= 1
