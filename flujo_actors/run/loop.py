"""The loop step kind: a body pipeline on reused step actors, until its exit condition."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from .. import partial
from ..policy.merge import identity_of
from ..steps.dsl import LoopStep
from .common import call_checked, concluded, failed_at
from .core import Chain, Job

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from ..results import StepResult

__all__ = ["run_loop_step"]

_perf = time.perf_counter


_LOOP: Final = "Loop"


async def run_loop_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run the body until the exit condition holds or ``max_loops`` is reached.

    The body's step actors are started once and reused by every iteration
    (a reusable chain), and every iteration runs on the live context, so its
    changes carry into the next iteration and out of the loop. A callback
    that raises fails the step. Cancellation: cancelling the step cancels the
    iteration in flight; the body's actors are closed either way.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, LoopStep)
    ctx = frame.context
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    history: list[StepResult] = []
    data = frame.data
    iterations = 0
    exit_reason = "max_loops"
    failure: str | None = None
    output: Any = None
    # Callbacks get the live context too: they must not change the run's identity.
    identity = identity_of(ctx) if ctx is not None else None
    if step.compiled_initial is not None:
        what = "initial_input_to_loop_body_mapper"
        data, failure = await call_checked(
            ctx, identity, _LOOP, step.name, what, step.compiled_initial, data, ctx
        )
        if failure is not None:
            exit_reason = "error"
    exit_cb = step.compiled_exit
    assert exit_cb is not None
    iteration_cb = step.compiled_iteration
    max_loops = step.max_loops
    path, position = frame.path, frame.position
    in_flight: Job | None = None  # the iteration whose results are not in history yet
    try:
        # The body's actors are reused by every iteration: each gets the
        # iteration's frame in its mailbox and runs its turn on this task.
        chain = Chain(step.body.steps, frame.nursery, run, reusable=True)
        try:
            while failure is None:
                # The iteration (1-based) is part of its steps' positions.
                job = in_flight = Job(ctx, path, position=(*position, iterations + 1))
                await chain.execute(job, data)
                iterations += 1
                history.extend(job.history)
                in_flight = None
                if job.context is not ctx:
                    # A body step replaced the context: later iterations and the
                    # steps after the loop see the new one.
                    ctx = job.context
                    if frame.context_setter is not None:
                        frame.context_setter(ctx)
                if not job.success:
                    failure = f"Loop {step.name!r} iteration {iterations} failed {failed_at(job)}"
                    exit_reason = "body_failed"
                    break
                output = job.output
                done, failure = await call_checked(
                    ctx, identity, _LOOP, step.name, "exit_condition_callable", exit_cb, output, ctx
                )
                if failure is not None:
                    exit_reason = "error"
                    break
                if done:
                    exit_reason = "condition"
                    break
                if iterations >= max_loops:
                    failure = (
                        f"Loop {step.name!r} reached max_loops={max_loops} without its exit "
                        "condition being met; raise max_loops or check exit_condition_callable."
                    )
                    break
                if iteration_cb is None:
                    data = output
                else:
                    what = "iteration_input_mapper"
                    data, failure = await call_checked(
                        ctx, identity, _LOOP, step.name, what, iteration_cb, output, ctx, iterations
                    )
                    if failure is not None:
                        exit_reason = "error"
        finally:
            chain.close()
    except BaseException:
        kept = history if in_flight is None else [*history, *in_flight.history]
        cut = partial.cut_short(run, step.name, kept, latency_s=_perf() - t0)
        cut.metadata["iterations"] = iterations
        cut.metadata["exit_reason"] = "usage_limit" if run.breach_event.is_set() else "cancelled"
        partial.record(run, frame, cut)
        raise
    if failure is None and step.compiled_output is not None:
        output, failure = await call_checked(
            ctx, identity, _LOOP, step.name, "loop_output_mapper", step.compiled_output, output, ctx
        )
        if failure is not None:
            exit_reason = "error"
    output = output if failure is None or exit_reason == "max_loops" else None
    result = concluded(step, t0, output, failure, history)
    result.metadata["iterations"] = iterations
    result.metadata["exit_reason"] = exit_reason
    return result
