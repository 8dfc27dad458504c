"""Run persistence: the per-run persistence actor and checkpoint (de)coding.

After every top-level step the runner hands a :class:`RunCheckpoint` to
the run's persistence actor and waits for its answer before the next step
starts. The guarantee: **a step reported complete is durable (committed by
the backend) before the next step's side effects start.** The actor is a
group-commit writer: every checkpoint queued while a write is in progress is
written by the next ``save_states`` call in one transaction, so runs (or
hooks) that checkpoint concurrently share commits; a single sequential run
has at most one checkpoint in flight, so it pays one commit per step.

The work per step is O(1) in the run's length: the checkpoint carries only
the new step's row, the context and the next input, never the history.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from .actors.actor import Actor, ActorCell, ReplySlot, run_actor
from .backends.state import RunCheckpoint, RunSnapshot
from .results import PipelineResult, StepResult
from .serialization import dump_typed, load_typed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .actors.registry import Registry
    from .backends.state import StateBackend

__all__ = ["PersistenceActor", "ResumePoint", "checkpoint_for", "result_from_snapshot"]


class ResumePoint:
    """Where a resumed run continues: step index, its input, context, prior history."""

    __slots__ = (
        "context",
        "cost",
        "data",
        "history",
        "index",
        "initial_input",
        "new_fingerprint",
        "tokens",
    )

    def __init__(self, snap: RunSnapshot) -> None:
        self.index = snap.next_step_index
        self.history: list[StepResult] = [
            _as_step_result(load_typed(row, path=f"step_history[{i}]"))
            for i, row in enumerate(snap.step_history)
        ]
        self.context = load_typed(snap.context, path="context")
        self.initial_input = load_typed(snap.initial_input, path="initial_input")
        self.data = (
            load_typed(snap.output, path="output")
            if snap.next_step_index > 0
            else self.initial_input
        )
        self.cost = Decimal(snap.total_cost_usd)
        self.tokens = snap.total_tokens
        # Set by resume_async when a changed pipeline was allowed: recorded at
        # the resumed run's next checkpoint.
        self.new_fingerprint: str | None = None


def _as_step_result(value: object) -> StepResult:
    if not isinstance(value, StepResult):
        raise TypeError(f"stored step row is a {type(value).__name__}, not a StepResult")
    return value


def result_from_snapshot(snap: RunSnapshot) -> PipelineResult:
    """The stored result of a finished run."""
    point = ResumePoint(snap)
    done = snap.status == "completed"
    return PipelineResult(
        step_history=point.history,
        total_cost_usd=point.cost,
        total_tokens=point.tokens,
        final_pipeline_context=point.context,
        success=done,
        output=point.data if done else None,
        run_id=snap.run_id,
    )


def checkpoint_for(
    *,
    run_id: str,
    pipeline_name: str,
    index: int,
    n_steps: int,
    result: StepResult,
    context: Any,
    initial_input_json: Any,
    cost: Decimal,
    tokens: int,
) -> RunCheckpoint:
    """The checkpoint after top-level step ``index`` finished with ``result``.

    Raises:
        SerializationError: the step's output or the context cannot be
            serialized (the message names the value and the fix).
    """
    if not result.success:
        status, next_index = "failed", index
    elif index + 1 >= n_steps:
        status, next_index = "completed", index + 1
    else:
        status, next_index = "running", index + 1
    output = dump_typed(result.output, path=f"step {result.name!r} output")
    # The output is serialized once: the row carries the same JSON.
    row = dump_typed(attrs.evolve(result, output=None), path=f"step {result.name!r} result")
    fields = row.get("value") if isinstance(row, dict) else None
    if isinstance(fields, dict):
        fields["output"] = output
    else:  # a registered serializer for StepResult: keep its own format
        row = dump_typed(result, path=f"step {result.name!r} result")
    return RunCheckpoint(
        run_id=run_id,
        pipeline_name=pipeline_name,
        status=status,
        next_step_index=next_index,
        context=dump_typed(context, path="context"),
        initial_input=initial_input_json,
        output=output,
        new_steps=(row,),
        total_cost_usd=str(cost),
        total_tokens=tokens,
        updated_at=time.time(),
    )


class _Save:
    __slots__ = ("checkpoint", "slot")

    def __init__(self, checkpoint: RunCheckpoint, slot: ReplySlot) -> None:
        self.checkpoint = checkpoint
        self.slot = slot


class PersistenceActor(Actor):
    """The group-commit writer of one run (see the module docstring).

    It runs on the kernel's actor loop, through :meth:`handle_batch`: each
    turn takes every checkpoint queued while the previous write was in
    progress. Start :meth:`run` in the run's nursery; :meth:`save` waits
    until the checkpoint is committed. Cancelling a ``save`` abandons the
    wait, not the write: a write in progress completes (the backends do not
    abandon a commit halfway).
    """

    def __init__(
        self, backend: StateBackend, dead_letters: Any = None, registry: Registry | None = None
    ) -> None:
        self.backend = backend
        self.cell = ActorCell(
            "persistence", 1024, dead_letters, registry=registry, kind="persistence"
        )
        self.commits = 0

    async def save(self, checkpoint: RunCheckpoint) -> None:
        """Queue a checkpoint and wait until it is durable.

        Raises:
            Exception: whatever the backend raised while writing it.
        """
        slot = ReplySlot()
        await self.cell.ref.tell(_Save(checkpoint, slot))
        await slot.wait()

    def close(self) -> None:
        """Finish the queued writes, then stop."""
        self.cell.mailbox.finish()

    async def run(self) -> None:
        """The writer: the kernel's actor loop over :meth:`handle_batch`."""
        await run_actor(self, self.cell)

    async def handle_batch(self, messages: Sequence[Any]) -> None:
        """Commit every queued checkpoint in one write; answer each saver.

        A backend error fails every save of the batch (each saver gets it)
        and the writer carries on with the next batch.
        """
        batch: Sequence[_Save] = messages
        try:
            if len(batch) == 1:
                first = batch[0].checkpoint
                await self.backend.save_state(first.run_id, first)
            else:
                await self.backend.save_states([m.checkpoint for m in batch])
        except Exception as exc:
            for m in batch:
                m.slot.fail(exc)
            return
        self.commits += 1
        for m in batch:
            m.slot.set(None)
