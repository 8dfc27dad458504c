"""What the state backend stores as a run's status agrees with how the run ended.

Every terminal path: completed, a failed step (an agent error, a validator),
a usage-limit breach (at the top level and inside a parallel step), a
cancel, an error escaping the run, and the process going down. A breached
run continues under raised limits with ``fork_async(run_id, at=<the
breaching step>)``. Real SQLite files.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from flujo_actors import (
    Flujo,
    Pipeline,
    SerializationError,
    SQLiteBackend,
    Step,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from pathlib import Path

    from flujo_actors import PipelineResult


def _paid_steps(calls: list[str], n: int = 4, cost: float = 0.25) -> Pipeline:
    def make(i: int) -> Step:
        async def work(x: Any) -> UsageOutput:
            calls.append(f"s{i}")
            value = x.value if isinstance(x, UsageOutput) else x
            return UsageOutput(value + 1, cost_usd=cost, token_counts=1)

        return Step.from_callable(work, name=f"s{i}", max_retries=0)

    return Pipeline(steps=[make(i) for i in range(n)], name="paid")


async def _stored_status(backend: SQLiteBackend, run_id: str) -> str:
    snap = await backend.load_state(run_id)
    assert snap is not None
    return snap.status


async def test_a_breach_is_stored_as_failed_with_the_breaching_step(tmp_path: Path) -> None:
    calls: list[str] = []
    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(
            _paid_steps(calls),
            state_backend=backend,
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("0.6")),
        )
        with pytest.raises(UsageLimitExceededError) as raised:
            await runner.run_async(0, run_id="r")
        result = raised.value.result
        assert result is not None
        assert result.status == "failed"
        snap = await backend.load_state("r")
        assert snap is not None
        assert (snap.status, snap.next_step_index) == ("failed", 2)
        assert snap.total_cost_usd == "0.75" == str(result.total_cost_usd)
        assert snap.total_tokens == 3 == result.total_tokens
        # The stored run reads back as the result the breach reported.
        stored = await runner.resume_async("r")
        assert stored.status == "failed"
        assert not stored.success
        assert [r.name for r in stored.step_history] == ["s0", "s1", "s2"]
        assert [r.name for r in result.step_history] == ["s0", "s1", "s2"]
        assert stored.total_cost_usd == Decimal("0.75")
        assert calls == ["s0", "s1", "s2"]  # resuming a finished run runs nothing
    # After a restart, on the same file.
    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        assert await backend.list_runs("failed") == ["r"]


async def test_a_breached_run_continues_by_a_fork_at_the_breaching_step(tmp_path: Path) -> None:
    calls: list[str] = []
    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        tight = Flujo(
            _paid_steps(calls),
            state_backend=backend,
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("0.6")),
        )
        with pytest.raises(UsageLimitExceededError):
            await tight.run_async(0, run_id="r")
        calls.clear()
        raised = Flujo(
            _paid_steps(calls),
            state_backend=backend,
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("2")),
        )
        result = await raised.fork_async("r", at="s2", run_id="r2")
        assert result.status == "completed"
        assert result.output.value == 4
        assert calls == ["s2", "s3"]  # the steps before the breach are not paid again
        assert [r.name for r in result.step_history] == ["s0", "s1", "s2", "s3"]
        assert result.total_cost_usd == Decimal("1.00")
        assert await _stored_status(backend, "r2") == "completed"
        assert await _stored_status(backend, "r") == "failed"  # the original is untouched


async def test_a_breach_inside_a_parallel_step_is_stored_as_failed(tmp_path: Path) -> None:
    async def costly(x: int) -> UsageOutput:
        await trio.lowlevel.checkpoint()
        return UsageOutput(x, cost_usd=0.4)

    fan = Step.parallel(
        "fan", {f"b{i}": Step.from_callable(costly, name="pay", max_retries=0) for i in range(4)}
    )
    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(
            Step.from_callable(lambda x: x, name="first") >> fan,
            state_backend=backend,
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("1.0")),
        )
        with pytest.raises(UsageLimitExceededError) as raised:
            await runner.run_async(1, run_id="p")
        result = raised.value.result
        assert result is not None
        snap = await backend.load_state("p")
        assert snap is not None
        assert (snap.status, snap.next_step_index) == ("failed", 1)
        assert snap.total_cost_usd == str(result.total_cost_usd)
        stored = await runner.resume_async("p")
        assert [r.name for r in stored.step_history] == [r.name for r in result.step_history]
        assert stored.status == result.status == "failed"


async def _ends(path: Path, pipeline: Any, **kwargs: Any) -> tuple[str, str]:
    """``(the run's result status or its error type, the stored status)``."""
    async with SQLiteBackend(path) as backend:
        runner = Flujo(pipeline, state_backend=backend, **kwargs)
        outcome: PipelineResult | BaseException
        try:
            outcome = await runner.run_async(0, run_id="x")
        except Exception as exc:
            outcome = exc
        seen = outcome.status if not isinstance(outcome, BaseException) else type(outcome).__name__
        return seen, await _stored_status(backend, "x")


async def _inc(x: int) -> int:
    return x + 1


async def _boom(x: int) -> int:
    raise ValueError("boom")


def _positive(output: int) -> bool:
    return output < 0


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        pytest.param(Step.from_callable(_inc), ("completed", "completed"), id="completed"),
        pytest.param(
            Step.from_callable(_inc) >> Step.from_callable(_boom, max_retries=0),
            ("failed", "failed"),
            id="agent-error",
        ),
        pytest.param(
            Step.from_callable(_inc, validators=[_positive], max_retries=0),
            ("failed", "failed"),
            id="validation-failure",
        ),
        pytest.param(
            Step.loop_until("loop", Step.from_callable(_boom, max_retries=0), lambda o, c: True),
            ("failed", "failed"),
            id="failure-at-depth",
        ),
        pytest.param(
            Step.from_callable(_inc) >> Step.from_callable(lambda x: object(), name="opaque"),
            ("SerializationError", "failed"),
            id="escaping-error",
        ),
    ],
)
async def test_the_stored_status_agrees_with_how_the_run_ended(
    tmp_path: Path, pipeline: Any, expected: tuple[str, str]
) -> None:
    assert await _ends(tmp_path / "runs.db", pipeline) == expected


async def test_an_escaping_error_is_raised_and_stored_as_failed(tmp_path: Path) -> None:
    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(
            Step.from_callable(_inc, name="a") >> Step.from_callable(lambda x: object(), name="b"),
            state_backend=backend,
        )
        with pytest.raises(SerializationError, match=r"step 'b' output"):
            await runner.run_async(0, run_id="e")
        snap = await backend.load_state("e")
        assert snap is not None
        # Its completed step is kept: a fork at the failing step continues it.
        assert (snap.status, snap.next_step_index, len(snap.step_history)) == ("failed", 1, 1)


async def test_a_cancelled_run_is_stored_as_cancelled(tmp_path: Path) -> None:
    started = trio.Event()

    async def slow(x: int) -> int:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(Step.from_callable(_inc) >> Step.from_callable(slow), state_backend=backend)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(runner.run_async, 0, run_id="c"))
                await started.wait()
                scope.cancel()
        assert await _stored_status(backend, "c") == "cancelled"


class _ProcessGoingDown(BaseException):
    """Stands in for KeyboardInterrupt (not an Exception)."""


async def test_the_process_going_down_leaves_the_run_resumable(tmp_path: Path) -> None:
    going_down = [True]

    async def dies_once(x: int) -> int:
        if going_down[0]:
            going_down[0] = False
            raise _ProcessGoingDown
        return x + 1

    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(
            Step.from_callable(_inc, name="a") >> Step.from_callable(dies_once, name="b"),
            state_backend=backend,
        )
        with pytest.raises(_ProcessGoingDown):
            await runner.run_async(0, run_id="k")
        assert await _stored_status(backend, "k") == "running"
        result = await runner.resume_async("k")
        assert (result.status, result.output) == ("completed", 2)
        assert await _stored_status(backend, "k") == "completed"


async def test_a_breach_whose_output_cannot_be_stored_is_still_the_breach(tmp_path: Path) -> None:
    class Opaque:
        cost_usd = 2.0

    async def costly(x: int) -> Opaque:
        return Opaque()

    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(
            Step.from_callable(costly, name="costly"),
            state_backend=backend,
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("1")),
        )
        with pytest.raises(UsageLimitExceededError):
            await runner.run_async(1, run_id="o")
        stored = await runner.resume_async("o")
        assert stored.status == "failed"
        (step,) = stored.step_history
        assert (step.name, step.output, step.cost_usd) == ("costly", None, Decimal("2.0"))
        assert step.metadata["output_not_stored"].startswith("Cannot serialize an object of type ")
