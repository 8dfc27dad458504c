"""Run persistence and resume, against every state backend."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import (
    Flujo,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    RunNotFoundError,
    SerializationError,
    Step,
)
from flujo_actors.backends.state import InMemoryStateBackend, RunCheckpoint
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from collections.abc import Sequence


@attrs.define
class TallyContext(PipelineContext):
    seen: list[int] = attrs.Factory(list)


class RecordingBackend(InMemoryStateBackend):
    """Records every checkpoint and interleaves a marker into a shared event log."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.checkpoints: list[RunCheckpoint] = []

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        await super().create_run(checkpoint)
        self.checkpoints.append(checkpoint)
        self.events.append(f"saved:{checkpoint.next_step_index}")

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        await super().save_state(run_id, checkpoint)
        self.checkpoints.append(checkpoint)
        self.events.append(f"saved:{checkpoint.next_step_index}")

    async def save_states(self, batch: Sequence[RunCheckpoint]) -> None:
        for cp in batch:
            await self.save_state(cp.run_id, cp)


class Crash(BaseException):
    """Stands in for the process dying mid-step (not an Exception: nothing retries it)."""


def make_pipeline(events: list[str], crash_at: list[int | None], n: int = 5) -> Pipeline:
    def make(i: int) -> Step:
        async def work(x: Any, *, context: TallyContext) -> UsageOutput:
            value = x.value if isinstance(x, UsageOutput) else x
            if crash_at[0] == i:
                crash_at[0] = None
                raise Crash
            events.append(f"ran:{i}")
            context.seen.append(i)
            return UsageOutput(value + 1, cost_usd=0.25, token_counts=10)

        return Step.from_callable(work, name=f"work{i}", max_retries=0)

    async def first(x: Any) -> int:
        return int(x)

    return Pipeline(steps=[Step.from_callable(first)] + [make(i) for i in range(n)], name="tally")


async def test_checkpoint_after_every_top_level_step_before_the_next_starts() -> None:
    events: list[str] = []
    backend = RecordingBackend(events)
    runner = Flujo(
        make_pipeline(events, [None], n=3), context_model=TallyContext, state_backend=backend
    )
    result = await runner.run_async(0, run_id="r")
    assert result.success
    # The first checkpoint is taken before step 0; each step's is durable before
    # the next step runs.
    assert events == [
        "saved:0",
        "saved:1",
        "ran:0",
        "saved:2",
        "ran:1",
        "saved:3",
        "ran:2",
        "saved:4",
    ]
    statuses = [cp.status for cp in backend.checkpoints]
    assert statuses == ["running"] * 4 + ["completed"]
    # O(1) per step: every checkpoint carries only its own new step row.
    assert [len(cp.new_steps) for cp in backend.checkpoints] == [0, 1, 1, 1, 1]
    assert backend.checkpoints[-1].total_cost_usd == "0.75"


async def test_resume_continues_after_the_last_persisted_step() -> None:
    events: list[str] = []
    backend = InMemoryStateBackend()
    crash_at: list[int | None] = [2]
    runner = Flujo(
        make_pipeline(events, crash_at), context_model=TallyContext, state_backend=backend
    )
    with pytest.raises(Crash):
        await runner.run_async(0, run_id="job-1")
    assert events == ["ran:0", "ran:1"]
    snap = await backend.load_state("job-1")
    assert snap is not None and snap.status == "running" and snap.next_step_index == 3

    result = await runner.resume_async("job-1")
    assert result.success
    assert events == ["ran:0", "ran:1", "ran:2", "ran:3", "ran:4"]  # nothing ran twice
    assert result.output == UsageOutput(5, cost_usd=0.25, token_counts=10)
    assert [r.name for r in result.step_history] == ["first"] + [f"work{i}" for i in range(5)]
    assert result.final_pipeline_context.seen == [0, 1, 2, 3, 4]
    assert result.final_pipeline_context.run_id == "job-1"
    assert result.total_cost_usd == Decimal("1.25") and result.total_tokens == 50
    # Once finished, resuming returns the stored result without running anything.
    again = await runner.resume_async("job-1")
    assert events == ["ran:0", "ran:1", "ran:2", "ran:3", "ran:4"]
    assert again == result


async def test_a_failed_run_is_finished_and_returns_its_stored_result() -> None:
    async def bad(x: int) -> int:
        raise ValueError("no")

    backend = InMemoryStateBackend()
    runner = Flujo(Step.from_callable(bad, max_retries=0), state_backend=backend)
    result = await runner.run_async(1, run_id="f")
    assert not result.success
    stored = await runner.resume_async("f")
    assert stored.success is False
    assert stored.step_history[-1].feedback == "ValueError: no"


async def test_resume_errors_are_clear() -> None:
    async def ok(x: int) -> int:
        return x

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo\.resume_async needs a state backend: pass Flujo\(\.\.\., state_backend=SQLiteBackend\('runs\.db'\)\) \(or InMemoryStateBackend\(\)\)\.$",
    ):
        await Flujo(Step.from_callable(ok)).resume_async("x")
    backend = InMemoryStateBackend()
    runner = Flujo(Step.from_callable(ok), state_backend=backend)
    with pytest.raises(
        RunNotFoundError,
        match=r"^Run 'ghost' is not in the state backend InMemoryStateBackend; check the run id \(backend\.list_runs\(\) lists the known runs\)\.$",
    ):
        await runner.resume_async("ghost")
    await runner.run_async(1, run_id="mine")
    other = Flujo(Pipeline(steps=[Step.from_callable(ok)], name="other"), state_backend=backend)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Run 'mine' was stored by pipeline 'pipeline', which differs from this runner's "
        r"pipeline 'other' at name: 'pipeline' vs 'other'\. Resume it with the runner that "
        r"started it, or pass allow_changed_pipeline=True if the change is compatible\.$",
    ):
        await other.resume_async("mine")


class Opaque:
    """Not serializable: no registered serializer."""


async def test_unserializable_output_fails_loudly_naming_the_step() -> None:
    async def opaque(x: int) -> Opaque:
        return Opaque()

    runner = Flujo(Step.from_callable(opaque), state_backend=InMemoryStateBackend())
    with pytest.raises(SerializationError, match=r"Opaque") as info:
        await runner.run_async(1)
    assert "register_custom_serializer" in str(info.value)
    assert "step 'opaque' output" in str(info.value)


async def test_unserializable_input_is_refused_before_any_step_runs() -> None:
    ran: list[int] = []

    async def step0(x: Any) -> int:
        ran.append(1)
        return 1

    runner = Flujo(Step.from_callable(step0), state_backend=InMemoryStateBackend())
    with pytest.raises(SerializationError, match=r"Opaque"):
        await runner.run_async(Opaque())
    assert ran == []
