"""``timeout_s`` holds for attempts that block the event loop and cannot be interrupted (#9).

A blocking call is simulated deterministically: the agent advances the mock clock
itself (``clock.jump``) without a checkpoint, exactly what ``time.sleep`` does to
trio's real clock.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flujo_actors import Flujo, Step
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    import trio.testing


def _message(took: str) -> str:
    return (
        "TimeoutError: step 'blocker' timed out after 0.05 s: the attempt blocked the event "
        f"loop and returned after {took} s. Blocking code cannot be interrupted; use "
        "placement='process', or trio.to_thread.run_sync inside an async agent."
    )


async def test_a_sync_agent_that_blocks_past_its_timeout_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def blocker(data: str) -> str:
        autojump_clock.jump(0.5)  # blocks: no checkpoint for 0.5 s
        return "too late"

    runner = Flujo(Step.from_callable(blocker, timeout_s=0.05, max_retries=0))
    result = await runner.run_async("x")
    assert not result.success
    step = result.step_history[-1]
    assert (step.output, step.attempts) == (None, 1)
    assert step.feedback == _message("0.5")
    assert step.metadata["error_type"] == "TimeoutError"


async def test_an_async_agent_that_blocks_is_retried_like_any_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[int] = []

    async def blocker(data: str) -> UsageOutput:
        calls.append(len(calls))
        if len(calls) == 1:
            autojump_clock.jump(0.5)  # time.sleep(0.5) inside an async agent
        return UsageOutput(f"attempt {len(calls)}", cost_usd=0.25)

    runner = Flujo(Step.from_callable(blocker, timeout_s=0.05, max_retries=1))
    result = await runner.run_async("x")
    assert result.success
    step = result.step_history[-1]
    assert (step.output.value, step.attempts) == ("attempt 2", 2)
    # The late attempt ran to its end: its usage is counted, its output discarded.
    assert step.cost_usd == result.total_cost_usd == Decimal("0.50")


async def test_a_blocking_attempt_within_its_timeout_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def blocker(data: str) -> str:
        autojump_clock.jump(0.04)
        return "in time"

    result = await Flujo(Step.from_callable(blocker, timeout_s=0.05)).run_async("x")
    assert result.success and result.output == "in time"


async def test_a_late_attempt_hands_over_to_the_fallback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def blocker(data: Any) -> str:
        autojump_clock.jump(1.0)
        return "late"

    step = Step.from_callable(
        blocker,
        timeout_s=0.05,
        max_retries=0,
        fallback=Step.from_callable(lambda data: "fallback", name="quick"),
    )
    result = await Flujo(step).run_async("x")
    assert result.output == "fallback"
    assert result.step_history[-1].metadata["original_error"] == _message("1")
