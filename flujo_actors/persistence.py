"""Run persistence: the per-run persistence actor and checkpoint (de)coding.

After every top-level step the runner hands a :class:`RunCheckpoint` to
the run's persistence actor and waits for its answer before the next step
starts. The guarantee: **a step reported complete is durable (committed by
the backend) before the next step's side effects start.** The actor is a
group-commit writer: every checkpoint queued while a write is in progress is
written by the next ``save_states`` call in one transaction, so runs (or
hooks) that checkpoint concurrently share commits; a single sequential run
has at most one checkpoint in flight, so it pays one commit per step.

The last step of a parallel branch or of a map item has no next step in its
chain: its record is queued without waiting (``save(..., wait=False)``), so
the branch finishes at once instead of sleeping until the commit. The writer
commits in order, and the record of the fan-out step itself (or of the run,
at the top level) comes after its branches' and is waited for: nothing after
the fan-out starts before all of it is durable. A crash before the commit
re-runs such a step on resume, as it would a step whose commit was in
flight. A failed write of a queued record fails the next waited save of the
run (and every one after it), so a run never reports complete over a record
that was not stored.

The work per step is O(1) in the run's length: the checkpoint carries only
the new step's row, the context and the next input, never the history.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import trio

from .actors.actor import Actor, ActorCell, ReplySlot, run_actor
from .backends.state import PositionRecord, RunCheckpoint, RunSnapshot
from .errors import MailboxFull
from .results import PipelineResult, StepResult
from .serialization import dump_typed, load_typed
from .step_rows import (
    Saved,
    expand_row,
    position_rows,
    row_from_step,
    step_from_stored_row,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .actors.registry import Registry
    from .backends.state import StateBackend
    from .policy.merge import BranchChanges
    from .run.checkpoint import Positions

__all__ = [
    "CONTEXT_AFTER",
    "PersistenceActor",
    "ResumePoint",
    "checkpoint_for",
    "context_after",
    "expanded_rows",
    "history_from_snapshot",
    "open_positions",
    "result_from_snapshot",
    "step_from_row",
    "step_row",
]


class ResumePoint:
    """Where a resumed run continues: step index, its input, context, prior history."""

    __slots__ = (
        "answers",
        "base",
        "context",
        "cost",
        "data",
        "history",
        "index",
        "initial_input",
        "new_fingerprint",
        "positions",
        "tokens",
    )

    def __init__(self, snap: RunSnapshot, positions: dict[str, Any] | None = None) -> None:
        self.index = snap.next_step_index
        self.history = history_from_snapshot(snap, positions)
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
        # Completed positions below the top level (loaded by resume_async).
        self.positions: dict[str, Any] = positions if positions is not None else {}
        # The stored run row (a RunCheckpoint) and the validated human answers.
        self.base: Any = None
        self.answers: dict[str, Any] = {}


#: The key of a top-level step row that holds the context the step left (for forks).
CONTEXT_AFTER = "context_after"


def step_from_row(row: Any, where: str, positions: Mapping[str, Any] | None = None) -> StepResult:
    """Rebuild a top-level StepResult saved by :func:`checkpoint_for` (or :func:`step_row`).

    ``where`` names it in errors; ``positions`` (the run's stored position
    records) resolves the children it stored by reference (see
    :mod:`flujo_actors.step_rows`). A top-level row's ``context_after`` is
    not part of it.

    Raises:
        StateBackendError: a child it refers to is not stored.
    """
    row = _without_context_after(row)
    try:
        return step_from_stored_row(
            row, where, _row_root(row), None if positions is None else position_rows(positions)
        )
    except KeyError as exc:
        from .errors import StateBackendError

        raise StateBackendError(str(exc.args[0])) from None


def history_from_snapshot(
    snap: RunSnapshot, positions: Mapping[str, Any] | None = None
) -> list[StepResult]:
    """The stored top-level history of ``snap``, its children resolved from ``positions``."""
    return [
        step_from_row(row, f"step_history[{i}]", positions)
        for i, row in enumerate(snap.step_history)
    ]


def expanded_rows(rows: Sequence[Any], positions: Mapping[str, Any]) -> tuple[Any, ...]:
    """Top-level rows with every child stored by reference written inline (for a fork).

    Raises:
        StateBackendError: a child a row refers to is not stored.
    """
    lookup = position_rows(positions)
    try:
        return tuple(expand_row(row, _row_root(row), lookup) for row in rows)
    except KeyError as exc:
        from .errors import StateBackendError

        raise StateBackendError(str(exc.args[0])) from None


def _without_context_after(row: Any) -> Any:
    if isinstance(row, dict) and CONTEXT_AFTER in row:
        return {k: v for k, v in row.items() if k != CONTEXT_AFTER}
    return row


def _row_root(row: Any) -> tuple[Any, ...]:
    """The position of a top-level step from its row: ``(name,)``, what references hang off."""
    fields = row.get("value") if isinstance(row, dict) else None
    name = fields.get("name") if isinstance(fields, dict) else None
    return (name,) if isinstance(name, str) else ()


def context_after(row: Any, run_id: str, index: int) -> Any:
    """The context top-level step ``index`` of run ``run_id`` left, from its stored row.

    Raises:
        PipelineDefinitionError: the row was stored without it (by a
            flujo_actors before forks), so the run cannot be forked there.
    """
    if not isinstance(row, dict) or CONTEXT_AFTER not in row:
        from .errors import PipelineDefinitionError

        raise PipelineDefinitionError(
            f"Run {run_id!r}: step {index} was stored without the context it left (by a "
            "flujo_actors version before forks), so the run cannot be forked after it; fork "
            "at step 0, or at a step recorded since."
        )
    return load_typed(row[CONTEXT_AFTER], path=f"step_history[{index}].{CONTEXT_AFTER}")


def result_from_snapshot(
    snap: RunSnapshot, positions: dict[str, Any] | None = None
) -> PipelineResult:
    """The stored result of a finished run (``positions``: its stored position records)."""
    point = ResumePoint(snap, positions)
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
    saved: Saved | None = None,
) -> RunCheckpoint:
    """The checkpoint after top-level step ``index`` finished with ``result``.

    Its descendants found in ``saved`` (stored as positions of their own)
    are written as references: the row is O(the step's direct children).

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
    context_json = dump_typed(context, path="context")
    output, row = row_from_step(result, (result.name,), saved)
    if isinstance(row, dict):
        # Each row keeps the context its step left, so a fork can start after any
        # step (O(context) per step; the run row holds only the latest context).
        row[CONTEXT_AFTER] = context_json
    return RunCheckpoint(
        run_id=run_id,
        pipeline_name=pipeline_name,
        status=status,
        next_step_index=next_index,
        context=context_json,
        initial_input=initial_input_json,
        output=output,
        new_steps=(row,),
        total_cost_usd=str(cost),
        total_tokens=tokens,
        updated_at=time.time(),
    )


def step_row(result: StepResult) -> tuple[Any, Any]:
    """``(output JSON, result row JSON)`` of a finished step (the output serialized once).

    Raises:
        SerializationError: the output (or another value of the result)
            cannot be serialized; the message names the step.
    """
    return row_from_step(result)


def open_positions(
    persistence: PersistenceActor, run_id: str, done: dict[str, Any] | None
) -> Positions:
    """The :class:`~flujo_actors.run.checkpoint.Positions` of a run saved by ``persistence``.

    A record is ``{"result": <step row>, "changes": <context changes>}``
    (``changes`` left out when the step changed nothing), all JSON data.
    """
    from .run.checkpoint import Positions
    from .step_cache import dump_changes, load_changes

    def encode(result: StepResult, changes: BranchChanges | None, position: tuple[Any, ...]) -> Any:
        # Children stored as positions of their own are references: O(direct children).
        _output, row = row_from_step(result, position, positions.saved)
        record: dict[str, Any] = {"result": row}
        if changes is not None:
            record["changes"] = dump_changes(changes)
        return record

    def decode(
        record: Any, where: str, position: tuple[Any, ...]
    ) -> tuple[StepResult, BranchChanges | None]:
        changes = record.get("changes")
        try:
            result = step_from_stored_row(record["result"], where, position, lookup)
        except KeyError as exc:
            from .errors import StateBackendError

            raise StateBackendError(str(exc.args[0])) from None
        return result, None if changes is None else load_changes(changes)

    # Checked once here (the record's own validators): every record of the run reuses it.
    PositionRecord(run_id=run_id, position="[]", record=None)

    async def save(position: str, record: Any, wait: bool) -> None:
        # A position key is never empty ("[...]"): built without re-running the validators
        # (one record per completed step at every depth).
        item = _position_record(run_id, position, record)
        await persistence.save(item, wait=wait)

    positions = Positions(save, encode, decode, done)
    lookup = position_rows(positions.stored)
    return positions


def _position_record(run_id: str, position: str, record: Any) -> PositionRecord:
    """``PositionRecord(run_id=..., position=..., record=...)`` of values already checked."""
    item = object.__new__(PositionRecord)
    # Frozen: set as attrs' own __init__ does.
    object.__setattr__(item, "run_id", run_id)
    object.__setattr__(item, "position", position)
    object.__setattr__(item, "record", record)
    return item


class _Save:
    __slots__ = ("checkpoint", "slot")

    def __init__(self, checkpoint: RunCheckpoint | PositionRecord, slot: ReplySlot | None) -> None:
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
        # The failure of a write nobody waited for: every later save raises it.
        self._lost: Exception | None = None
        #: The keys of positions queued without waiting and not committed yet (a
        #: row written past this actor must not refer to them: see Recorder.breached).
        self.queued: set[str] = set()

    async def save(self, checkpoint: RunCheckpoint | PositionRecord, *, wait: bool = True) -> None:
        """Queue a checkpoint (or a completed position) and wait until it is durable.

        With ``wait=False`` it is only queued (no schedule point unless the
        mailbox is full): it is committed in order, before anything saved
        after it; if that write fails, the next waited save raises the error.

        Raises:
            Exception: whatever the backend raised while writing it, or while
                writing a record queued earlier without waiting.
        """
        if self._lost is not None:
            raise self._lost
        ref = self.cell.ref
        if not wait:
            message = _Save(checkpoint, None)
            if isinstance(checkpoint, PositionRecord):
                self.queued.add(checkpoint.position)
            try:
                ref.tell_nowait(message)
            except MailboxFull:
                await ref.tell(message)
            return
        # A cancelled caller sends nothing (as a tell waiting for room would not).
        await trio.lowlevel.checkpoint_if_cancelled()
        slot = ReplySlot()
        message = _Save(checkpoint, slot)
        try:
            ref.tell_nowait(message)  # one schedule point per save: the wait below
        except MailboxFull:
            await ref.tell(message)
        await slot.wait()
        if self._lost is not None:
            raise self._lost

    def close(self) -> None:
        """Finish the queued writes, then stop."""
        self.cell.mailbox.finish()

    async def run(self) -> None:
        """The writer: the kernel's actor loop over :meth:`handle_batch`."""
        await run_actor(self, self.cell)

    async def handle_batch(self, messages: Sequence[Any]) -> None:
        """Commit every queued checkpoint in one write; answer each saver.

        A backend error fails every save of the batch (each saver gets it)
        and the writer carries on with the next batch, unless the batch held
        a record nobody waits for: then that error fails every later batch
        unwritten (a later row may refer to the lost record).
        """
        batch: Sequence[_Save] = messages
        try:
            if self._lost is not None:
                raise self._lost
            await self._write(batch)
        except Exception as exc:
            for m in batch:
                if m.slot is None:
                    self._lost = exc
                else:
                    m.slot.fail(exc)
            return
        self.commits += 1
        for m in batch:
            if m.slot is not None:
                m.slot.set(None)
            elif isinstance(m.checkpoint, PositionRecord):
                self.queued.discard(m.checkpoint.position)

    async def _write(self, batch: Sequence[_Save]) -> None:
        """One commit per kind of record in the batch: positions first, then run rows."""
        backend = self.backend
        first = batch[0].checkpoint
        if len(batch) == 1:
            if isinstance(first, PositionRecord):
                await backend.save_positions([first])
            else:
                await backend.save_state(first.run_id, first)
            return
        positions: list[PositionRecord] = []
        runs: list[RunCheckpoint] = []
        for m in batch:
            item = m.checkpoint
            if isinstance(item, PositionRecord):
                positions.append(item)
            else:
                runs.append(item)
        # Positions first: a run row never claims more than its positions show.
        if positions:
            await backend.save_positions(positions)
        if runs:
            await backend.save_states(runs)
