"""Result value types: :class:`StepResult`, :class:`PipelineResult`, and usage arithmetic."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import attrs

from .tracing import Span

__all__ = ["ZERO", "PipelineResult", "StepResult", "to_decimal"]

ZERO: Final = Decimal(0)


def to_decimal(value: object) -> Decimal:
    """Convert a reported cost to an exact Decimal.

    A float ``x`` enters as ``Decimal(repr(x))`` so ``0.1`` is exactly
    ``Decimal("0.1")``, not the binary approximation.

    Raises:
        TypeError: the value is not a number (bool is refused too).
    """
    if type(value) is Decimal:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise TypeError(
            f"cost_usd must be a number (int, float, Decimal or numeric str), got {value!r}."
        )
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


@attrs.define(eq=True, repr=True)
class StepResult:
    """The outcome of one step (control-flow steps hold their children in ``step_history``).

    Attributes:
        name: the step's name.
        output: what the step produced (the fallback's output if one ran).
        success: False if the step failed after its attempts (and fallback).
        attempts: primary-agent attempts made.
        latency_s: wall time the step took, in seconds.
        cost_usd: exact cost of the step, children and fallback included.
        token_counts: tokens used by the step, children and fallback included.
        feedback: why the step failed (or a validator/plugin message).
        branch_context: the context a branch ended with (parallel branches).
        metadata: extra facts (``iterations``, ``exit_reason``, ``fallback_triggered``, ...).
        step_history: children's results, for control-flow steps.
    """

    name: str
    output: Any = None
    success: bool = True
    attempts: int = 1
    latency_s: float = 0.0
    cost_usd: Decimal = ZERO
    token_counts: int = 0
    feedback: str | None = None
    branch_context: Any = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    step_history: list[StepResult] = attrs.Factory(list)


@attrs.define(eq=True, repr=True)
class PipelineResult:
    """The outcome of a run.

    ``success`` is False when a step failed; the failed step is then the
    last entry of ``step_history``. Totals are exact and come from the run's
    governor (every usage update of every step, at every depth). ``trace`` is
    the run's :class:`~flujo_actors.tracing.Span` tree when tracing was on
    (``Flujo(..., trace=True)`` or a span listener hook), else None.
    """

    step_history: list[StepResult] = attrs.Factory(list)
    total_cost_usd: Decimal = ZERO
    total_tokens: int = 0
    final_pipeline_context: Any = None
    success: bool = True
    output: Any = None
    run_id: str = ""
    trace: Span | None = None
