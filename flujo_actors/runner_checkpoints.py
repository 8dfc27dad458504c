"""What the runner persists: a new run's first checkpoint, one per finished step, resume checks.

Cancellation: the per-step checkpointer waits until the persistence actor
has made the step's checkpoint durable; cancelled while it waits, the
checkpoint may or may not have been written.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs

from .results import add_usd

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .backends.state import RunCheckpoint
    from .persistence import PersistenceActor
    from .policy.ledger import UsageLedger
    from .results import StepResult
    from .run.core import Job
    from .steps.dsl import Pipeline

__all__ = ["changed_message", "checkpointer", "first_checkpoint"]


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


def checkpointer(
    pipeline: Pipeline,
    run_id: str,
    persistence: PersistenceActor,
    initial_input: Any,
    ledger: UsageLedger,
    new_fingerprint: str | None = None,
) -> Callable[[int, StepResult, Job], Awaitable[None]]:
    """The top-level job's ``on_step``: persist each finished step before the next."""
    from .persistence import checkpoint_for
    from .serialization import dump_typed

    input_json = dump_typed(initial_input, path="initial_input")
    n_steps = len(pipeline.steps)
    name = pipeline.name
    # Totals from the top-level results (each includes its children): exact,
    # and independent of when the governor applies told usage messages.
    cost, tokens = ledger.cost, ledger.tokens

    async def on_step(index: int, result: StepResult, job: Job) -> None:
        nonlocal cost, tokens, new_fingerprint
        cost = add_usd(cost, result.cost_usd)
        tokens += result.token_counts
        checkpoint = checkpoint_for(
            run_id=run_id,
            pipeline_name=name,
            index=index,
            n_steps=n_steps,
            result=result,
            context=job.context,
            initial_input_json=input_json,
            cost=cost,
            tokens=tokens,
        )
        if new_fingerprint is not None:
            # A resume with a changed pipeline (allowed): the run now belongs
            # to this pipeline, recorded once, with its first new step.
            checkpoint = attrs.evolve(checkpoint, pipeline_fingerprint=new_fingerprint)
            new_fingerprint = None
        await persistence.save(checkpoint)

    return on_step
