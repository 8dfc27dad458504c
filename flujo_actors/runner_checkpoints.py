"""What the runner persists: a new run's first checkpoint, one per finished step, resume checks.

Also the run's status, which always agrees with the run's
:attr:`~flujo_actors.results.PipelineResult.status`: ``"running"`` while it
runs, ``"completed"`` / ``"failed"`` with its last step, ``"failed"`` too when
it breached its usage limits (:meth:`Recorder.breached`) or an error escaped
it (:meth:`Recorder.failed`), ``"paused"`` when it waits for human input,
``"cancelled"`` when its caller cancelled it (see :class:`Recorder`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .results import add_usd

if TYPE_CHECKING:
    from decimal import Decimal

    from .backends.state import RunCheckpoint
    from .persistence import PersistenceActor
    from .policy.ledger import UsageLedger
    from .results import StepResult
    from .run.checkpoint import Positions
    from .run.core import Job
    from .step_rows import Saved
    from .steps.dsl import Pipeline

__all__ = ["Recorder", "changed_message", "first_checkpoint", "resume_base"]


def changed_message(pipeline: Pipeline, fingerprint: str, run_id: str, snap: Any) -> str:
    """Why a stored run cannot be resumed by a runner of ``pipeline`` (its fingerprint differs)."""
    if snap.pipeline_fingerprint is None:
        return (
            f"Run {run_id!r} was stored without a pipeline fingerprint (by a flujo_actors "
            "version before fingerprints), so this runner cannot check that its pipeline "
            f"{pipeline.name!r} is the pipeline {snap.pipeline_name!r} that started the "
            "run. If it is, resume with allow_changed_pipeline=True."
        )
    from .policy.fingerprint import first_difference

    diff = first_difference(snap.pipeline_fingerprint, fingerprint)
    return (
        f"Run {run_id!r} was stored by pipeline {snap.pipeline_name!r}, which differs from "
        f"this runner's pipeline {pipeline.name!r} at {diff}. Resume it with the "
        "runner that started it, or pass allow_changed_pipeline=True if the change is "
        "compatible."
    )


def first_checkpoint(
    pipeline: Pipeline, fingerprint: str, run_id: str, initial_input: Any, context: Any
) -> RunCheckpoint:
    """The checkpoint a new run is created with, before any step runs."""
    from .backends.state import RunCheckpoint
    from .serialization import dump_typed

    return RunCheckpoint(
        run_id=run_id,
        pipeline_name=pipeline.name,
        status="running",
        next_step_index=0,
        context=dump_typed(context, path="context"),
        initial_input=dump_typed(initial_input, path="initial_input"),
        # Wall clock, like every checkpoint's: a run that crashed in its first
        # step still has an age for `prune(older_than_s=...)` and `runs list`.
        updated_at=time.time(),
        pipeline_fingerprint=fingerprint,
    )


class Recorder:
    """What the runner persists while a run runs: each top-level step, a pause, a cancel.

    Call it as the top-level job's ``on_step`` (it persists each finished
    step before the next starts). It keeps the last checkpoint saved, so a
    pause or a cancel stores the run as it was after its last completed
    top-level step, with the new status: the in-progress step's completed
    positions are replayed from their own records on resume, never counted
    twice.

    Cancellation: ``on_step`` waits until the persistence actor made the
    checkpoint durable; cancelled while it waits, it may or may not have
    been written. :meth:`cancelled` writes shielded.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        run_id: str,
        persistence: PersistenceActor,
        base: RunCheckpoint,
        ledger: UsageLedger,
        human: Any = None,
        new_fingerprint: str | None = None,
        positions: Positions | None = None,
    ) -> None:
        self.run_id = run_id
        self.persistence = persistence
        self.n_steps = len(pipeline.steps)
        self.name = pipeline.name
        self.last = base
        self.human = human
        self.new_fingerprint = new_fingerprint
        # The run's completed positions: a step's row refers to those of its children.
        self.saved = positions.saved if positions is not None else None
        # Totals from the top-level results (each includes its children): exact,
        # and independent of when the governor applies told usage messages.
        self.cost, self.tokens = ledger.cost, ledger.tokens

    async def __call__(self, index: int, result: StepResult, job: Job) -> None:
        from .persistence import checkpoint_for

        human = self.human
        if human is not None and human.pending:
            await self._paused()
            return
        self.cost = add_usd(self.cost, result.cost_usd)
        self.tokens += result.token_counts
        checkpoint = checkpoint_for(
            run_id=self.run_id,
            pipeline_name=self.name,
            index=index,
            n_steps=self.n_steps,
            result=result,
            context=job.context,
            initial_input_json=self.last.initial_input,
            cost=self.cost,
            tokens=self.tokens,
            saved=self.saved,
        )
        if self.new_fingerprint is not None:
            # A resume with a changed pipeline (allowed): the run now belongs
            # to this pipeline, recorded once, with its first new step.
            checkpoint = attrs.evolve(checkpoint, pipeline_fingerprint=self.new_fingerprint)
            self.new_fingerprint = None
        await self.persistence.save(checkpoint)
        # Kept as saved: every later use evolves it with new_steps=() and its own fingerprint.
        self.last = checkpoint
        if self.saved:
            # The step's row refers to them: nothing later encodes them again.
            self.saved.clear()

    async def _paused(self) -> None:
        from .backends.state import PositionRecord
        from .runner_human import PAUSED_KEY, pending_record

        # The pending inputs first: a run row saying "paused" always has them.
        await self.persistence.save(
            PositionRecord(
                run_id=self.run_id,
                position=PAUSED_KEY,
                record=pending_record(self.human.pending),
            )
        )
        await self.persistence.save(self._with_status("paused"))

    def _with_status(self, status: str) -> RunCheckpoint:
        return attrs.evolve(
            self.last,
            status=status,
            new_steps=(),
            updated_at=time.time(),
            pipeline_fingerprint=self.new_fingerprint,
        )

    async def cancelled(self) -> None:
        """Store the run as cancelled (shielded: the run's own scope is being cancelled)."""
        with trio.CancelScope(shield=True):
            await self.persistence.backend.save_state(self.run_id, self._with_status("cancelled"))

    async def breached(
        self, history: list[StepResult], context: Any, cost: Decimal, tokens: int
    ) -> None:
        """Store a run that breached its usage limits as ``"failed"``.

        ``history`` is the run's top-level history as the raised
        :class:`~flujo_actors.errors.UsageLimitExceededError` reports it: the
        rows not stored yet (the breaching step, cut short) are appended, so
        the stored run reads back as that result. ``next_step_index`` stays
        at the breaching step: ``fork_async(run_id, at=<it>)`` continues the
        run there (under raised limits) without re-running the steps before.
        Shielded: the run's scope was cancelled by the breach.

        The breach is what the caller is told: a breaching step whose output
        cannot be serialized is stored without it (``output`` None, the
        reason in ``metadata["output_not_stored"]``) rather than turning the
        breach into a SerializationError; the step runs again in a fork anyway.
        """
        from .serialization import dump_typed

        saved = self._committed(self.saved)
        rows = tuple(_breach_row(r, saved) for r in history[self.last.next_step_index :])
        checkpoint = attrs.evolve(
            self._with_status("failed"),
            new_steps=rows,
            context=dump_typed(context, path="context"),
            total_cost_usd=str(cost),
            total_tokens=tokens,
        )
        with trio.CancelScope(shield=True):
            await self.persistence.backend.save_state(self.run_id, checkpoint)

    def _committed(self, saved: Saved | None) -> Saved | None:
        """``saved`` without the positions whose records may not be committed.

        A branch's last step queues its record without waiting; a row written
        straight to the backend after the run stopped (a breach) must not
        refer to one its persistence actor did not commit: it holds it inline.
        """
        queued = self.persistence.queued
        if not saved or not queued:
            return saved
        from .run.checkpoint import position_key

        return {k: v for k, v in saved.items() if position_key(v[1]) not in queued}

    async def failed(self, error: BaseException) -> None:
        """Store the run as ``"failed"``: ``error`` (an ``Exception``) escaped it.

        The run raised instead of returning a result (a hook, the state
        backend, an unserializable output, a bug of ours), so it ended: the
        stored run keeps its completed steps and says ``"failed"``, never
        ``"running"`` forever. If this write fails too, ``error`` is the one
        raised, with a note saying the status could not be stored. Shielded.
        """
        with trio.CancelScope(shield=True):
            try:
                await self.persistence.backend.save_state(self.run_id, self._with_status("failed"))
            except Exception as exc:
                error.add_note(
                    f"flujo_actors: the run's status could not be stored as 'failed' "
                    f"({type(exc).__name__}: {exc}); the state backend still says "
                    f"{self.last.status!r}."
                )


def _breach_row(result: StepResult, saved: Saved | None) -> Any:
    from .errors import SerializationError
    from .step_rows import row_from_step

    root = (result.name,)
    try:
        return row_from_step(result, root, saved)[1]
    except SerializationError as exc:
        kept = attrs.evolve(result, output=None, metadata=dict(result.metadata))
        kept.metadata["output_not_stored"] = str(exc)
    try:
        return row_from_step(kept, root, saved)[1]
    except SerializationError:
        # A child's output: the children are dropped too (their positions stay stored).
        return row_from_step(attrs.evolve(kept, step_history=[]), root, saved)[1]


def resume_base(snap: Any) -> RunCheckpoint:
    """The checkpoint a resumed run continues from (its stored run row)."""
    from .backends.state import RunCheckpoint

    return RunCheckpoint(
        run_id=snap.run_id,
        pipeline_name=snap.pipeline_name,
        status="running",
        next_step_index=snap.next_step_index,
        context=snap.context,
        initial_input=snap.initial_input,
        output=snap.output,
        total_cost_usd=snap.total_cost_usd,
        total_tokens=snap.total_tokens,
        updated_at=snap.updated_at,
    )
