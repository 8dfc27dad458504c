"""The conditional and nested-pipeline step kinds: one sub-pipeline, run as a job.

The step sends the sub-pipeline's first frame to its first step actor's
mailbox (:meth:`~flujo_actors.run.core.Chain.execute`); the sub-pipeline's
last step replies to the job, and this step turns the job into its result.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from .. import partial
from ..context import build_context
from ..errors import PipelineDefinitionError
from ..policy.merge import identity_of
from ..steps.dsl import ConditionalStep, Pipeline, PipelineStep
from .common import branch_result, call_checked, failed, failed_at
from .core import Chain, Job

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from ..results import StepResult

__all__ = ["run_conditional_step", "run_pipeline_step"]

_perf = time.perf_counter
# _run_nested's "the frame's own input" marker (a conditional's input mapper may return None).
_FRAME_DATA: Final = object()
_COND: Final = "Conditional step"


async def _run_nested(
    frame: ExecutionFrame[Any],
    pipeline: Pipeline,
    ctx: Any,
    path: tuple[str, ...],
    data: Any = _FRAME_DATA,
) -> Job:
    """Run ``pipeline`` to completion on ``ctx``; the job's last step replies to this step.

    The last step of the nested pipeline streams if the enclosing step does.
    Cut short by a breach, the enclosing step records the steps that
    completed (and the partial result of the one in flight) once they have
    unwound.
    """
    job = Job(ctx, path, on_chunk=frame.on_chunk if frame.stream else None, position=frame.position)
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    try:
        # The nested chain runs on this step's task (its actors' turns, one after
        # another), under this step's cancel scope: no nursery of its own.
        await Chain(pipeline.steps, frame.nursery, run).execute(
            job, frame.data if data is _FRAME_DATA else data
        )
    except BaseException:
        branch_context = None if ctx is frame.context else ctx
        partial.record(
            run,
            frame,
            partial.cut_short(run, frame.step.name, job.history, branch_context=branch_context),
        )
        raise
    return job


def _adopt_context(frame: ExecutionFrame[Any], job: Job) -> None:
    # A child replaced the shared context: the rest of the parent pipeline sees it too.
    if job.context is not frame.context and frame.context_setter is not None:
        frame.context_setter(job.context)


async def run_conditional_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run the branch whose key ``condition(data, context)`` returns, on the live context.

    Cancellation: cancelling the step cancels the branch.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, ConditionalStep)
    assert step.compiled_condition is not None
    ctx = frame.context
    identity = identity_of(ctx) if ctx is not None else None
    key, problem = await call_checked(
        ctx,
        identity,
        _COND,
        step.name,
        "condition_callable",
        step.compiled_condition,
        frame.data,
        ctx,
    )
    if problem is not None:
        return failed(step, t0, problem, [])
    try:
        branch = step.branches.get(key)
    except TypeError:  # an unhashable key matches nothing
        branch = None
    used_default = branch is None
    if branch is None:
        branch = step.default_branch
    if branch is None:
        return failed(
            step,
            t0,
            f"Conditional step {step.name!r}: no branch matches key {key!r} "
            f"(branches: {list(step.branches)!r}) and there is no default_branch_pipeline; "
            "add the key or a default_branch_pipeline.",
            [],
        )
    data = frame.data
    if step.compiled_input_mapper is not None:
        data, problem = await call_checked(
            ctx,
            identity,
            _COND,
            step.name,
            "branch_input_mapper",
            step.compiled_input_mapper,
            data,
            ctx,
        )
        if problem is not None:
            return failed(step, t0, problem, [])
    job = await _run_nested(frame, branch, frame.context, frame.path, data)
    _adopt_context(frame, job)
    result = branch_result(step.name, job, None)
    result.metadata["executed_branch_key"] = key
    result.metadata["default_branch"] = used_default
    if not job.success:
        which = "default branch" if used_default else f"branch {key!r}"
        result.feedback = (
            f"Conditional step {step.name!r}: {which} (key {key!r}) failed {failed_at(job)}"
        )
    elif step.compiled_output_mapper is not None:
        # The branch's own context (it may have replaced it) is what the mapper sees.
        mapped, problem = await call_checked(
            job.context,
            identity,
            _COND,
            step.name,
            "branch_output_mapper",
            step.compiled_output_mapper,
            result.output,
            job.context,
        )
        result.output = mapped
        if problem is not None:
            result.output = None
            result.success = False
            result.feedback = problem
    result.latency_s = _perf() - t0
    return result


async def run_pipeline_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run a nested pipeline as one step, on the parent's context or a fresh one.

    A fresh context is built like the runner builds one: ``initial_prompt``
    from this step's input, the run's ``run_id``, the step's context model
    (the parent's by default) and ``initial_context_data``; the step's
    ``branch_context`` is that context. Cancellation: cancelling the step
    cancels the nested pipeline.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, PipelineStep)
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    if step.inherit_context:
        ctx = frame.context
    else:
        model = step.context_model or type(frame.context)
        try:
            ctx = build_context(model, step.initial_context_data, frame.data, run.run_id)
        except PipelineDefinitionError as exc:
            return failed(step, t0, f"Nested pipeline step {step.name!r}: {exc}", [])
    job = await _run_nested(frame, step.pipeline, ctx, frame.path)
    if step.inherit_context:
        _adopt_context(frame, job)
    result = branch_result(step.name, job, None if step.inherit_context else job.context)
    result.latency_s = _perf() - t0
    if not job.success:
        result.feedback = f"Nested pipeline step {step.name!r} failed {failed_at(job)}"
    return result
