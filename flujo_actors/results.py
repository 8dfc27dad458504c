"""Result value types: :class:`StepResult`, :class:`PipelineResult`, and usage arithmetic."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs

from .spans import Span

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "COST_RULE",
    "COUNT_RULE",
    "EXACT",
    "RUN_RESULT_STATUSES",
    "ZERO",
    "MapItemDone",
    "PausedRun",
    "PendingInput",
    "PipelineResult",
    "StepResult",
    "StreamRetried",
    "Usage",
    "add_usd",
    "sub_usd",
    "sum_usd",
    "to_decimal",
    "usd_amount",
    "whole_count",
]

ZERO: Final = Decimal(0)

#: The decimal context of every usage total. The application's ambient context
#: (``decimal.getcontext()``, whose precision may be 2 or the default 28 digits)
#: must not round a ledger: with the largest precision the implementation allows,
#: sums of costs are exact (addition never needs more digits than its operands).
#: Signals are not trapped: a finite cost never raises here.
EXACT: Final = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_add = EXACT.add
_sub = EXACT.subtract


def add_usd(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` exactly, whatever the ambient ``decimal`` context says."""
    return _add(a, b)


def sub_usd(a: Decimal, b: Decimal) -> Decimal:
    """``a - b`` exactly, whatever the ambient ``decimal`` context says."""
    return _sub(a, b)


def sum_usd(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``values`` (``ZERO`` for none), independent of the ambient context."""
    total = ZERO
    for v in values:
        total = _add(total, v)
    return total


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


def whole_count(value: object) -> int | None:
    """``value`` as an ``int`` if it is a whole number >= 0, else None.

    Accepted: ``int`` and its subclasses (an ``IntEnum``) but not ``bool``,
    integral finite floats and Decimals (``5000.0``), and numeric strings of
    a whole number (``"5000"``). Refused (None): ``True``, ``2.5``, ``-1``,
    ``nan``, ``"abc"``, lists, ...
    """
    t = type(value)
    if t is int:
        return value if value >= 0 else None  # type: ignore[operator,return-value]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = int(value)
    elif isinstance(value, (float, Decimal, str)):
        try:
            d = Decimal(repr(value)) if isinstance(value, float) else to_decimal(value)
        except (TypeError, ArithmeticError):
            return None
        if not d.is_finite() or d != d.to_integral_value():
            return None
        n = int(d)
    else:
        return None
    return n if n >= 0 else None


def usd_amount(value: object) -> Decimal | None:
    """``value`` as exact dollars if it is a finite number >= 0, else None."""
    try:
        d = to_decimal(value)
    except (TypeError, ArithmeticError):
        return None
    return d if d.is_finite() and d >= 0 else None


#: What a reported or configured cost must be (the wording of every message that refuses one).
COST_RULE: Final = "a finite number >= 0 (int, float, Decimal or numeric str)"
#: What a reported token count must be.
COUNT_RULE: Final = "a whole number >= 0 (int, integral float or Decimal, or numeric str)"


def _count_of(field: str, value: object) -> int:
    n = whole_count(value)
    if n is None:
        raise ValueError(f"Usage: {field} must be {COUNT_RULE}, got {value!r}.")
    return n


def _tokens(value: object) -> int:
    return _count_of("tokens", value)


def _input_tokens(value: object) -> int | None:
    return None if value is None else _count_of("input_tokens", value)


def _output_tokens(value: object) -> int | None:
    return None if value is None else _count_of("output_tokens", value)


def _usage_cost(value: object) -> Decimal | None:
    if value is None:
        return None
    d = usd_amount(value)
    if d is None:
        raise ValueError(f"Usage: cost_usd must be {COST_RULE} or None, got {value!r}.")
    # The form a sum takes (Decimal("1E+1") is Decimal("10"), -0 is 0), so charging it
    # as it is gives the totals summing it would.
    return _add(ZERO, d)


@attrs.frozen(kw_only=True)
class Usage:
    """What one agent call used, as a step reports it (or an extractor reads it).

    Return one from an extractor registered with
    :func:`~flujo_actors.register_usage_extractor`, or ``yield`` one from a
    streaming agent (it counts as usage and is not part of the output).

    Attributes:
        cost_usd: exact dollars, or None when the call does not know its
            cost (it is then priced from ``model`` and the tokens, when a
            price table is installed).
        tokens: all tokens the call used. Left at 0 while ``input_tokens``
            or ``output_tokens`` is given, it is their sum.
        input_tokens: prompt/input tokens, if known.
        output_tokens: completion/output tokens, if known.
        model: the model that answered (``"gpt-4o"``), for pricing.

    Raises:
        ValueError: a count that is not a whole number >= 0, or a cost that
            is not a finite number >= 0.
    """

    cost_usd: Decimal | None = attrs.field(default=None, converter=_usage_cost)
    tokens: int = attrs.field(default=0, converter=_tokens)
    input_tokens: int | None = attrs.field(default=None, converter=_input_tokens)
    output_tokens: int | None = attrs.field(default=None, converter=_output_tokens)
    model: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.tokens == 0 and (self.input_tokens or self.output_tokens):
            object.__setattr__(self, "tokens", (self.input_tokens or 0) + (self.output_tokens or 0))


@attrs.frozen
class StreamRetried:
    """A stream item: the streaming step's attempt failed and it is being retried.

    ``stream_async`` yields it after the failed attempt's chunks and before
    the next attempt's, so a consumer can drop (or mark) what it showed of
    the failed attempt. It is never part of the step's output.

    Attributes:
        step: the step's name.
        attempt: the attempt that failed (1 for the first).
        error: why it failed (``"ValueError: boom"``, the step's feedback).
    """

    step: str
    attempt: int
    error: str


@attrs.frozen
class MapItemDone:
    """A stream item: one item of a map step completed (successfully or not).

    ``stream_async`` yields it as each item of a streaming map step (the
    pipeline's last step) completes, in completion order; ``index`` tells
    the items apart (the item's position in the items). It is never part of
    the step's output.

    Attributes:
        step: the map step's name.
        index: the item's position, from 0.
        result: the item's StepResult (named ``"{step}[{index}]"``); its
            ``output`` is the body's output.
    """

    step: str
    index: int
    result: StepResult


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


RUN_RESULT_STATUSES: Final = ("completed", "failed", "paused", "cancelled")
"""The values of :attr:`PipelineResult.status`."""


@attrs.frozen(kw_only=True)
class PendingInput:
    """One human-input step a paused run waits for.

    Attributes:
        key: how to address it in ``resume_async(run_id, human_input={key: value})``:
            its position joined by ``/`` (step names, loop iterations, branch
            names), e.g. ``"review/2/approve"``.
        path: the step's path in the pipeline tree (names only).
        position: the path plus the loop iterations on the way down.
        step: the step's name.
        message: what it asks (a callable message already evaluated).
        input_schema: the JSON schema of the expected input (``{}``: any JSON value).
    """

    key: str
    path: tuple[str, ...]
    position: tuple[str | int, ...]
    step: str
    message: str
    input_schema: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class PausedRun:
    """Why a run is paused: the human inputs it waits for (at least one).

    ``path``, ``message`` and ``input_schema`` are the first pending input's;
    ``pending`` lists all of them (parallel branches may each wait for one).
    """

    pending: tuple[PendingInput, ...]

    @property
    def path(self) -> tuple[str, ...]:
        """The first pending step's path."""
        return self.pending[0].path

    @property
    def message(self) -> str:
        """The first pending step's message."""
        return self.pending[0].message

    @property
    def input_schema(self) -> dict[str, Any]:
        """The first pending step's input schema."""
        return self.pending[0].input_schema


@attrs.define(eq=True, repr=True)
class PipelineResult:
    """The outcome of a run.

    ``success`` is False when a step failed; the failed step is then the
    last entry of ``step_history``. Totals are exact and come from the run's
    governor (every usage update of every step, at every depth). ``trace`` is
    the run's :class:`~flujo_actors.spans.Span` tree when tracing was on
    (``Flujo(..., trace=True)`` or a span listener hook), else None.
    ``status`` is ``"completed"``, ``"failed"``, ``"paused"`` (waiting for
    human input: ``paused`` says for what) or ``"cancelled"``; left out, it
    follows ``success``.
    """

    step_history: list[StepResult] = attrs.Factory(list)
    total_cost_usd: Decimal = ZERO
    total_tokens: int = 0
    final_pipeline_context: Any = None
    success: bool = True
    output: Any = None
    run_id: str = ""
    trace: Span | None = None
    status: str = attrs.field(default="", kw_only=True)
    paused: PausedRun | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not self.status:
            self.status = "completed" if self.success else "failed"
        elif self.status not in RUN_RESULT_STATUSES:
            raise ValueError(
                f"PipelineResult.status must be one of {RUN_RESULT_STATUSES!r}, "
                f"got {self.status!r}."
            )
