"""The run package reaches executors and the asyncio bridge only through ``RunState.call_sites``."""

from __future__ import annotations

from typing import Any

from flujo_actors import ExecutionFrame, Flujo, InlineExecutor, Step
from flujo_actors.call_sites import CALL_SITES
from flujo_actors.run.core import RunState, run_step


def double(x: int) -> int:
    return 2 * x


async def test_a_placed_step_runs_through_the_runners_call_sites() -> None:
    executor = InlineExecutor()
    result = await Flujo(Step.from_callable(double, name="d", placement=executor)).run_async(21)
    assert result.output == 42
    assert executor.statistics().completed == 1


async def test_a_run_state_without_call_sites_says_what_to_pass() -> None:
    step = Step.from_callable(double, name="d", placement=InlineExecutor())
    run = RunState("r")
    frame: ExecutionFrame[Any] = ExecutionFrame(step, 1, None, run=run, path=("d",))
    failed = await run_step(frame)
    assert not failed.success
    assert failed.feedback == (
        "FlujoInternalError: This run has no call sites for placed or asyncio steps: a "
        "RunState built outside Flujo needs call_sites=flujo_actors.call_sites.CALL_SITES."
    )
    run.call_sites = CALL_SITES
    result = await run_step(ExecutionFrame(step, 1, None, run=run, path=("d",)))
    assert result.output == 2
