"""Partial results of steps cut short by a cancellation, above all a usage-limit breach.

On a breach the governor cancels the whole run at once (and a failing branch
under ``PROPAGATE`` cancels its siblings), so no step that is still running
builds its :class:`StepResult` the normal way. Each one instead records what
it had done when the cancellation reached it, and the result
keeps the normal tree shape: a control-flow step cut short holds its
completed children (finished branches and iterations, completed nested
steps) and the partial results of the children cut short with it, and the
branch holding the breaching step comes last, so the breaching step is the
last leaf of the last top-level entry. Every usage that reached the governor
is in the tree exactly once, so the costs add up to the run's totals.

The record is keyed by the frame being executed: whoever awaits a step (its
step actor, the fallback supervisor, the router) takes the record of that
frame once the step has unwound. Control-flow steps build theirs after
their children have unwound (their children run in nurseries the step
owns), so a record is complete when it is taken.
"""

from __future__ import annotations

from typing import Any

from .results import ZERO, StepResult, add_usd

__all__ = ["contains", "cut_short", "last_to_breach", "record", "take"]


def record(run: Any, frame: Any, result: StepResult) -> None:
    """Remember ``result`` as what ``frame``'s step has done so far (replaces older records).

    The frame itself is kept with the record: while the record lives, no other
    frame can have its id.
    """
    run.partials[id(frame)] = (frame, result)


def take(run: Any, frame: Any) -> StepResult | None:
    """The record of ``frame`` (removed), or None."""
    entry = run.partials.pop(id(frame), None)
    if entry is None or entry[0] is not frame:
        return None
    result: StepResult = entry[1]
    return result


def breach_message(run: Any) -> str:
    breached = getattr(run.governor, "breached", None)
    return breached.message if breached is not None else "the run's usage limits were breached"


def breaching_leaf(run: Any) -> StepResult | None:
    """The result of the step whose usage breached the limits (None: a refused reservation)."""
    breached = getattr(run.governor, "breached", None)
    return breached.result if breached is not None else None


def contains(results: list[StepResult], leaf: StepResult) -> bool:
    """Whether ``leaf`` (by identity) is one of ``results`` or in one of their subtrees."""
    stack = list(results)
    while stack:
        r = stack.pop()
        if r is leaf:
            return True
        stack.extend(r.step_history)
    return False


def last_to_breach(results: list[StepResult], run: Any) -> list[StepResult]:
    """``results`` with the one holding the breaching step moved to the end."""
    leaf = breaching_leaf(run)
    if leaf is None:
        return results
    for i, r in enumerate(results):
        if contains([r], leaf):
            return [*results[:i], *results[i + 1 :], r]
    return results


def cut_short(
    run: Any,
    name: str,
    history: list[StepResult],
    *,
    attempts: int = 1,
    latency_s: float = 0.0,
    branch_context: Any = None,
) -> StepResult:
    """The result of a step (or branch) the breach cancelled, holding ``history``.

    Its usage is the sum of its children's; ``metadata["cancelled"]`` is set
    and the feedback quotes the breach, if there was one.
    """
    cost = ZERO
    tokens = 0
    for r in history:
        cost = add_usd(cost, r.cost_usd)  # exact, whatever the ambient decimal context
        tokens += r.token_counts
    result = StepResult(
        name,
        None,
        False,
        attempts,
        latency_s,
        cost,
        tokens,
        f"Cancelled: {breach_message(run)}"
        if run.breach_event.is_set()
        else "Cancelled before it finished.",
        branch_context,
        step_history=history,
    )
    result.metadata["cancelled"] = True
    return result
