"""What the control-flow kinds share: a job as a branch's result, failure wording.

Every control-flow step runs its children as jobs on chains of step actors
started in a nursery beneath the step (its chain's nursery, or a nursery of
its own for parallel branches), so cancelling the step's scope cancels every
child at any depth and nothing outlives the step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..policy.merge import IDENTITY_ORDER, IDENTITY_RULE, identity_change
from ..results import ZERO, StepResult, add_usd
from .invoke import call

if TYPE_CHECKING:
    from decimal import Decimal

    from ..steps.callables import Callback
    from ..steps.kinds import AnyStep
    from .core import Job

__all__ = [
    "branch_result",
    "call_checked",
    "concluded",
    "failed",
    "failed_at",
    "hijacked",
    "sibling_cancelled",
    "sum_usage",
]

_perf = time.perf_counter


def sum_usage(history: list[StepResult]) -> tuple[Decimal, int]:
    cost = ZERO
    tokens = 0
    for r in history:
        cost = add_usd(cost, r.cost_usd)
        tokens += r.token_counts
    return cost, tokens


def branch_result(name: str, job: Job, ctx: Any) -> StepResult:
    """A finished job as the StepResult of the branch (or sub-pipeline) ``name``.

    Its latency is its steps' latencies added up (they ran one after another);
    callers that time the whole job themselves overwrite it.
    """
    history = job.history
    if len(history) == 1:
        # One step per branch or item is the common shape: nothing to add up.
        last: StepResult | None = history[0]
        assert last is not None
        cost, tokens, latency = last.cost_usd, last.token_counts, last.latency_s
        if cost is not ZERO:
            cost = add_usd(ZERO, cost)  # the sum's exact form, as sum_usage gives it
    else:
        cost, tokens = sum_usage(history)
        last = history[-1] if history else None
        latency = sum(r.latency_s for r in history)
    success = job.success
    return StepResult(
        name,
        job.output if success else None,
        success,
        1,
        latency,
        cost,
        tokens,
        None if success or last is None else last.feedback,
        ctx,
        {},  # metadata: positional, as keywords cost more than the rest of the call
        history,
    )


def sibling_cancelled(name: str, job: Job, why: str, ctx: Any) -> StepResult:
    """The result of branch (or item) ``name`` whose job a failing sibling cancelled.

    ``why`` names the sibling and the option (``"sibling branch 'b' of step 'p'
    failed first (on_branch_failure=PROPAGATE)"``); the result keeps what the
    job had done and is marked ``metadata["cancelled"]``.
    """
    cost, tokens = sum_usage(job.history)
    r = StepResult(
        name,
        None,
        False,
        1,
        0.0,
        cost,
        tokens,
        f"Cancelled: {why}.",
        ctx,
        step_history=job.history,
    )
    r.metadata["cancelled"] = True
    return r


def failed_at(job: Job) -> str:
    """``"at step 'x': feedback"`` for a failed job (names the failing child)."""
    last = job.history[-1]
    return f"at step {last.name!r}: {last.feedback}"


def failed(step: AnyStep, t0: float, feedback: str, history: list[StepResult]) -> StepResult:
    return concluded(step, t0, None, feedback, history)


def concluded(
    step: AnyStep, t0: float, output: Any, failure: str | None, history: list[StepResult]
) -> StepResult:
    """The result of a control-flow step started at ``t0``: its children's usage, summed."""
    cost, tokens = sum_usage(history)
    return StepResult(
        step.name,
        output,
        failure is None,
        1,
        _perf() - t0,
        cost,
        tokens,
        failure,
        step_history=history,
    )


async def call_checked(
    ctx: Any,
    before: tuple[Any, ...] | None,
    kind: str,
    name: str,
    what: str,
    cb: Callback,
    *args: Any,
) -> tuple[Any, str | None]:
    """``cb(*args)``, a step's callback on the live context ``ctx``.

    Returns (its value, None), or (None, why the step fails: the callback
    raised, or it changed an identity field of ``ctx``, which is put back).
    ``trio.Cancelled`` propagates.
    """
    try:
        value = await call(cb, *args)
    except Exception as exc:
        return None, f"{kind} {name!r}: {what} raised {type(exc).__name__}: {exc}"
    return value, hijacked(ctx, before, kind, name, what)


def hijacked(
    ctx: Any, before: tuple[Any, ...] | None, kind: str, name: str, what: str
) -> str | None:
    """If a callback changed an identity field of ``ctx``: put it back; the failure, else None."""
    if before is None:
        return None
    changed = identity_change(ctx, before)
    if changed is None:
        return None
    for field, value in zip(IDENTITY_ORDER, before, strict=True):
        if hasattr(ctx, field):
            object.__setattr__(ctx, field, value)
    return f"{kind} {name!r}: {what} changed {changed}: {IDENTITY_RULE}"
