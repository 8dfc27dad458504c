"""Usage and failures read the same on every executor as inline (one ``usage_of`` rule)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from flujo_actors import Flujo, InlineExecutor, Step, Usage
from flujo_actors.errors import UsageReportError
from flujo_actors.executors import WorkItem, WorkResult
from flujo_actors.executors._work import arun_pickled, decode_result, encode_item, run_pickled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


@attrs.frozen
class Reported:
    value: Any
    cost_usd: Any = 0
    token_counts: Any = None


# Module level: process workers import these by reference.
def bad_cost(data: Any) -> Reported:
    return Reported(data, cost_usd="abc")


async def bad_cost_async(data: Any) -> Reported:
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


BAD_COST = (
    "Step 'llm': its output reports cost_usd='abc'; usage must be a finite number >= 0 "
    "(int, float, Decimal or numeric str)."
)


async def _inline_executor(item: WorkItem) -> WorkResult:
    return await InlineExecutor().submit(item)


async def _process_executor(item: WorkItem) -> WorkResult:
    from flujo_actors.executors.process import ProcessExecutor

    made = ProcessExecutor(max_workers=1, worker_type="forkserver")
    try:
        return await made.submit(item)
    finally:
        await made.aclose()


async def _worker_in_a_thread(item: WorkItem) -> WorkResult:
    # A process or Ray task's entry point, run in a thread of this process.
    raw = await trio.to_thread.run_sync(run_pickled, encode_item(item, "test"), "test")
    return decode_result(raw, item.step_name, "test")


async def _worker_in_trio(item: WorkItem) -> WorkResult:
    # A Ray actor's entry point (sync agents go to one of its threads).
    return decode_result(await arun_pickled(encode_item(item, "test"), "test"), "llm", "test")


@pytest.mark.parametrize("agent", [bad_cost, bad_cost_async], ids=["sync", "async"])
@pytest.mark.parametrize(
    "submit",
    [_inline_executor, _worker_in_a_thread, _worker_in_trio, _process_executor],
    ids=["inline", "thread", "trio-worker", "process"],
)
async def test_a_bad_cost_is_the_inline_usage_report_error_returned_as_data(
    submit: Callable[[WorkItem], Awaitable[WorkResult]], agent: Any
) -> None:
    inline = await Flujo(Step.from_callable(agent, name="llm", max_retries=0)).run_async(1)
    assert inline.step_history[-1].feedback == f"UsageReportError: {BAD_COST}"
    spec = Step.from_callable(agent, name="llm").spec
    assert spec is not None
    result = await submit(WorkItem(step_name="llm", agent=spec, data=1))
    assert result.error is not None
    assert (result.output, result.cost_usd, result.token_counts) == (None, Decimal(0), 0)
    error = result.error.to_exception()
    assert type(error) is UsageReportError
    assert isinstance(error, ValueError)
    assert str(error) == BAD_COST


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


def test_a_work_item_the_worker_cannot_unpickle_comes_back_as_a_failed_result() -> None:
    import cloudpickle

    raw = run_pickled(cloudpickle.dumps((b"not a pickle", ())), "process pool")
    result = decode_result(raw, "llm", "process pool")
    assert result.error is not None
    assert result.error.type_name == "flujo_actors.errors.SerializationError"
    assert re.fullmatch(
        r"the process pool worker \(pid \d+ on .+\) cannot unpickle a work item: "
        r"UnpicklingError: .+\. The agent, its input and its context must be importable in "
        r"the worker \(install your package there, or define them in __main__ so cloudpickle "
        r"sends them by value\)\.",
        result.error.message,
    )
    assert result.error.exception is None  # only its type and message cross the boundary
