"""Forking a stored run: a new run from the checkpoint before a top-level step.

:func:`fork_run` copies the stored run's first ``k`` top-level step rows
(each carries the context the step left, see
:func:`flujo_actors.persistence.checkpoint_for`), rebuilds the context the
run had before step ``k`` with the caller's updates, creates the new run in
the state backend and resumes it there: steps ``k`` onwards run again, on
this runner's pipeline, and the first ``k`` are neither run nor charged
again (their usage counts in the new run's totals, as it did in the
original). The original run is only read.

Cancellation: cancelled before the new run is created, nothing is stored;
after, the new run is a stored run like any other (resume it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .context import build_context, context_field_names
from .errors import PipelineDefinitionError, RunNotFoundError
from .results import ZERO, add_usd
from .runner_recovery import release_created

if TYPE_CHECKING:
    from .backends.state import RunSnapshot
    from .results import PipelineResult
    from .runner import Flujo

__all__ = ["fork_run"]

_IDENTITY = ("run_id", "initial_prompt")


def _fork_index(runner: Flujo, at: object) -> int:
    steps = runner.pipeline.steps
    if isinstance(at, bool) or not isinstance(at, int | str):
        raise PipelineDefinitionError(
            f"Flujo.fork_async: at must be a top-level step name (str) or index (int), got {at!r}."
        )
    if isinstance(at, int):
        if not 0 <= at < len(steps):
            raise PipelineDefinitionError(
                f"Flujo.fork_async: at={at} is not a top-level step index of pipeline "
                f"{runner.pipeline.name!r}, which has steps 0..{len(steps) - 1}."
            )
        return at
    found = [i for i, step in enumerate(steps) if step.name == at]
    if not found:
        names = [step.name for step in steps]
        raise PipelineDefinitionError(
            f"Flujo.fork_async: at={at!r} names no top-level step of pipeline "
            f"{runner.pipeline.name!r}; its steps are {names!r}."
        )
    if len(found) > 1:
        raise PipelineDefinitionError(
            f"Flujo.fork_async: at={at!r} names top-level steps {found!r}; pass the index."
        )
    return found[0]


def _check_updates(model: type[Any], updates: object) -> Mapping[str, Any]:
    if updates is None:
        return {}
    if not isinstance(updates, Mapping):
        raise PipelineDefinitionError(
            f"Flujo.fork_async: context_updates must be a mapping of field -> value, "
            f"got {updates!r}."
        )
    fields = context_field_names(model)
    for key in updates:
        if key in _IDENTITY:
            raise PipelineDefinitionError(
                f"Flujo.fork_async: context_updates sets {key!r}, which identifies the run; "
                "the fork gets its own run_id and keeps the run's initial_prompt."
            )
        if key not in fields:
            settable = [f for f in fields if f not in _IDENTITY]
            raise PipelineDefinitionError(
                f"Flujo.fork_async: context_updates has field {key!r}, which context model "
                f"{model.__name__} does not define; its fields are {settable!r}."
            )
    return updates


def _check_run_id(run_id: object) -> str:
    if run_id is None:
        return uuid.uuid4().hex
    if not isinstance(run_id, str) or not run_id:
        raise PipelineDefinitionError(
            f"Flujo.fork_async: run_id must be a non-empty str or None, got {run_id!r}."
        )
    return run_id


def _check_forkable(runner: Flujo, snap: RunSnapshot, run_id: str, k: int) -> None:
    from .policy.fingerprint import prefix_difference

    done = snap.next_step_index if snap.status != "completed" else len(snap.step_history)
    if k > done:
        raise PipelineDefinitionError(
            f"Flujo.fork_async: run {run_id!r} completed {done} top-level step(s), so it has "
            f"no checkpoint before step {k} ({runner.pipeline.steps[k].name!r}); fork at a "
            f"step <= {done}."
        )
    if snap.pipeline_fingerprint is None:
        raise PipelineDefinitionError(
            f"Flujo.fork_async: run {run_id!r} was stored without a pipeline fingerprint, so "
            "nothing shows that its first steps are this pipeline's; it cannot be forked."
        )
    diff = prefix_difference(snap.pipeline_fingerprint, runner._pipeline_fingerprint(), k)
    if diff is not None:
        raise PipelineDefinitionError(
            f"Flujo.fork_async: the fork reuses the first {k} step(s) of run {run_id!r}, but "
            f"they differ from this runner's pipeline at {diff}. Fork at or before the first "
            "changed step."
        )


async def fork_run(
    runner: Flujo,
    source_id: str,
    *,
    at: str | int,
    context_updates: Mapping[str, Any] | None,
    run_id: str | None,
) -> PipelineResult:
    """Start a new run from stored run ``source_id``'s checkpoint before step ``at``.

    Raises:
        PipelineDefinitionError: no state backend, a bad argument, ``at`` past
            what the run completed, or the reused steps differ from this
            runner's pipeline (the message says where).
        RunNotFoundError: the backend does not know ``source_id``.
        RunExistsError: ``run_id`` already names a stored run.
    """
    from .backends.state import RunCheckpoint
    from .persistence import context_after, expanded_rows, step_from_row
    from .serialization import dump_typed, load_typed

    backend = runner.state_backend
    if backend is None:
        raise PipelineDefinitionError(
            "Flujo.fork_async needs a state backend: pass "
            "Flujo(..., state_backend=SQLiteBackend('runs.db'))."
        )
    k = _fork_index(runner, at)
    new_id = _check_run_id(run_id)
    snap = await backend.load_state(source_id)
    if snap is None:
        raise RunNotFoundError(
            f"Run {source_id!r} is not in the state backend {type(backend).__name__}; "
            "check the run id (backend.list_runs() lists the known runs)."
        )
    _check_forkable(runner, snap, source_id, k)
    # The new run has no positions: its rows carry their children inline.
    rows = expanded_rows(snap.step_history[:k], await backend.load_positions(source_id))
    history = [step_from_row(row, f"step_history[{i}]") for i, row in enumerate(rows)]
    initial_input = load_typed(snap.initial_input, path="initial_input")
    if k == 0:
        # Before the first step: the context a new run of this runner starts with.
        base: dict[str, Any] = dict(runner.initial_context_data)
        model: type[Any] = runner.context_model
    else:
        before = context_after(rows[-1], source_id, k - 1)
        model = type(before)
        base = {name: getattr(before, name) for name in context_field_names(model)}
        base.pop("run_id", None)
    updates = _check_updates(model, context_updates)
    context = build_context(model, {**base, **updates}, initial_input, new_id)
    cost, tokens = ZERO, 0
    for step in history:
        cost, tokens = add_usd(cost, step.cost_usd), tokens + step.token_counts
    output = dump_typed(history[-1].output, path="output") if history else None
    await backend.create_run(
        RunCheckpoint(
            run_id=new_id,
            pipeline_name=runner.pipeline.name,
            status="running",
            next_step_index=k,
            context=dump_typed(context, path="context"),
            initial_input=snap.initial_input,
            output=output,
            new_steps=rows,
            total_cost_usd=str(cost),
            total_tokens=tokens,
            updated_at=time.time(),
            pipeline_fingerprint=runner._pipeline_fingerprint(),
        )
    )
    await release_created(backend, new_id)
    return await runner.resume_async(new_id)
