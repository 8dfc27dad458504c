"""The events and commands of the attempt machine (:mod:`flujo_actors.policy.attempt`).

Events are past tense (what happened to an attempt, the cache, the
fallback); commands are imperative (what the supervisor does next). They are
attrs values that nothing mutates; they are not ``frozen`` only because a
frozen attrs ``__init__`` costs about twice as much, and a step's success
path builds some of them per step.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, TypeAlias

import attrs

from ..results import ZERO

__all__ = [
    "AttemptCommand",
    "AttemptEvent",
    "CacheHit",
    "CacheMissed",
    "Charge",
    "Conclude",
    "EmitRetried",
    "FallbackFinished",
    "Finish",
    "Invoke",
    "LookUpCache",
    "MarkStreamRetried",
    "Raised",
    "Refused",
    "Rejected",
    "Reraise",
    "Rollback",
    "RunFallback",
    "Sleep",
    "StoreInCache",
    "Succeeded",
    "TimedOut",
]


# -- events (past tense: what happened) ------------------------------------------------


@attrs.define(slots=True)
class Succeeded:
    """The attempt returned ``output`` and it passed the checks; it used ``cost``/``tokens``."""

    output: Any
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.define(slots=True)
class Raised:
    """The attempt raised ``error`` (the agent, a validator's own bug, a lost worker...)."""

    error: BaseException
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.define(slots=True)
class TimedOut:
    """The attempt exceeded ``timeout_s`` (cancelled at its deadline, or returned late)."""

    error: TimeoutError
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.define(slots=True)
class Rejected:
    """A validator (``by="validator"``) or plugin rejected the attempt's ``output``.

    Attributes:
        message: why (the validator's or plugin's own words).
        cause: the exception the validator or plugin raised, if it raised.
    """

    by: Literal["validator", "plugin"]
    message: str
    output: Any = None
    cause: BaseException | None = None
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.define(slots=True)
class Refused:
    """The output cannot be applied (``updates_context``, the run's identity): ``message``."""

    message: str
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.define(slots=True)
class CacheHit:
    """The cache answered for the step (its result is the shell's to return)."""


@attrs.define(slots=True)
class CacheMissed:
    """The cache had nothing; ``storable``: the input has a key, so a success is stored."""

    storable: bool = True


@attrs.define(slots=True)
class FallbackFinished:
    """The fallback step ended; ``success`` is its result's."""

    success: bool


AttemptEvent: TypeAlias = (
    Succeeded | Raised | TimedOut | Rejected | Refused | CacheHit | CacheMissed | FallbackFinished
)


# -- commands (imperative: what the shell does next) ---------------------------------------


@attrs.define(slots=True)
class LookUpCache:
    """Ask the cache; answer with :class:`CacheHit` or :class:`CacheMissed`."""


@attrs.define(slots=True)
class Invoke:
    """Run attempt ``attempt`` (from 1) of the agent, within ``timeout_s`` (None: no limit).

    ``isolated``: the attempt gets its own copy of the input (there may be
    another run of it). Answer with the attempt's outcome event.
    """

    attempt: int
    timeout_s: float | None
    isolated: bool


@attrs.define(slots=True)
class Rollback:
    """Put the context back as it was before the step (a failed attempt's changes go)."""


@attrs.define(slots=True)
class EmitRetried:
    """Tell the hooks and the tracer: attempt ``attempt`` failed; retry after ``delay_s``."""

    attempt: int
    feedback: str
    delay_s: float


@attrs.define(slots=True)
class MarkStreamRetried:
    """Tell the stream's consumer that the chunks so far belong to failed ``attempt``."""

    attempt: int
    feedback: str


@attrs.define(slots=True)
class Sleep:
    """Wait ``seconds`` on the run's clock (0: only check for cancellation)."""

    seconds: float


@attrs.define(slots=True)
class Conclude:
    """The primary attempts are over: build the step's result from the machine's state.

    That is :attr:`AttemptMachine.succeeded`, ``attempts``, ``cost``,
    ``tokens``, ``output`` (a success's, or the output a validator
    rejected), ``feedback``, ``error_type`` and ``failure`` (the exception
    behind the failure, for ``exception_type``/``traceback`` in the
    metadata). Carrying no data keeps a step's success path free of
    allocations.
    """


@attrs.define(slots=True)
class Charge:
    """Report ``cost``/``tokens`` (not reported so far) to the governor.

    ``interim``: a failed attempt's usage before a retry, charged with the
    step's result so far (the machine's ``attempts``, ``cost``, ``tokens``,
    ``feedback``, ``error_type``); else charged with the result built on
    :class:`Conclude` (or the cache hit).
    """

    cost: Decimal
    tokens: int
    interim: bool = False


@attrs.define(slots=True)
class RunFallback:
    """Run the fallback step; answer with :class:`FallbackFinished`."""


@attrs.define(slots=True)
class StoreInCache:
    """Store the step's successful result in the cache."""


@attrs.define(slots=True)
class Finish:
    """The step is over: return its result."""


@attrs.define(slots=True)
class Reraise:
    """Not a failure the step handles (``trio.Cancelled``, ...): re-raise ``error``."""

    error: BaseException


AttemptCommand: TypeAlias = (
    LookUpCache
    | Invoke
    | Rollback
    | Charge
    | EmitRetried
    | MarkStreamRetried
    | Sleep
    | Conclude
    | RunFallback
    | StoreInCache
    | Finish
    | Reraise
)
