"""The agent step's attempt state machine (pure: no trio, no I/O, no clock).

The step supervisor (:mod:`flujo_actors.run.agent`) is a thin shell around
:class:`AttemptMachine`, in the style of h11's ``_state.py``: the shell
feeds it *events* (what happened: an attempt succeeded, raised, timed out,
was rejected by a validator; the cache answered; the fallback finished) and
executes the *commands* it answers with (invoke the agent, roll the context
back, charge the governor, tell the hooks, sleep, run the fallback, store in
the cache, finish). Every rule of an attempt loop lives here, so it is
tested without an event loop (``tests/policy/test_attempt.py``):

* at most ``max_retries + 1`` primary attempts;
* what is retried: an agent exception that ``retry_on`` selects (default:
  every ``Exception``), a timeout, a lost worker (``ExecutorLost``), a
  validator or plugin rejection; never an output that cannot update the
  context, an agent on the wrong event loop (``AsyncioInTrioError``), a bad
  usage report or an unpriceable one, nor anything that is not an
  ``Exception`` (``trio.Cancelled`` is re-raised: :class:`Reraise`);
* retry ``k`` (0-based) waits ``backoff_s * backoff_factor**k`` seconds
  (``math.inf`` when that overflows; 0 when ``backoff_s`` is 0);
* every attempt's usage counts, the failed ones' too: under a limit a
  failed attempt's usage is charged before the retry (so a breach stops the
  retries); the rest is charged once, when the primary attempts end;
* a failed attempt's context changes are rolled back (also the last one's);
* when the attempts are spent (or the failure is not retryable) the
  fallback takes over if there is one, otherwise the step fails;
* the feedback texts (``"Validation failed after max retries: "``, ...)
  and the ``error_type`` of a failed step.

Each :meth:`AttemptMachine.handle` returns a tuple of commands to execute
in order; the last one is the only one that waits for an event
(:class:`Invoke`, :class:`LookUpCache`, :class:`RunFallback`) or ends the
step (:class:`Finish`, :class:`Reraise`). Feeding an event the machine does
not expect is a :class:`~flujo_actors.errors.FlujoInternalError`.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Final, Literal, Protocol, TypeAlias

import attrs

from ..errors import (
    AsyncioInTrioError,
    ExecutorLost,
    FlujoInternalError,
    PricingNotConfiguredError,
    UsageReportError,
)
from ..results import ZERO, add_usd, sub_usd
from .retry import is_retried

__all__ = [
    "PLUGIN_PREFIX",
    "VALIDATION_PREFIX",
    "AttemptCommand",
    "AttemptEvent",
    "AttemptMachine",
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
    "Supervision",
    "TimedOut",
    "backoff_delay",
    "fallback_feedback",
]

VALIDATION_PREFIX: Final = "Validation failed after max retries: "
PLUGIN_PREFIX: Final = "Plugin execution failed after max retries: "


class Supervision(Protocol):
    """The settings the machine reads (a :class:`~flujo_actors.StepConfig` has them)."""

    @property
    def max_retries(self) -> int: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def backoff_s(self) -> float: ...
    @property
    def backoff_factor(self) -> float: ...
    @property
    def retry_on(self) -> Any: ...


def backoff_delay(backoff_s: float, backoff_factor: float, attempts_made: int) -> float:
    """Seconds to wait before the attempt that follows ``attempts_made`` (>= 1) attempts.

    ``backoff_s * backoff_factor**(attempts_made - 1)``; 0 when ``backoff_s``
    is 0; ``math.inf`` rather than an ``OverflowError`` when the power
    overflows a float.
    """
    if attempts_made < 1:
        raise ValueError(f"attempts_made must be >= 1, got {attempts_made!r}.")
    if backoff_s == 0:
        return 0.0
    try:
        return float(backoff_s * backoff_factor ** (attempts_made - 1))
    except OverflowError:
        return math.inf


def fallback_feedback(
    fallback: str, fallback_success: bool, fallback_feedback: str | None, original: str | None
) -> str | None:
    """The feedback of a step whose fallback ran: the fallback's, or both failures."""
    if fallback_success:
        return fallback_feedback
    return f"Fallback step {fallback!r} failed: {fallback_feedback} (original error: {original})"


# -- events (past tense: what happened) ------------------------------------------------


@attrs.frozen(slots=True)
class Succeeded:
    """The attempt returned ``output`` and it passed the checks; it used ``cost``/``tokens``."""

    output: Any
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.frozen(slots=True)
class Raised:
    """The attempt raised ``error`` (the agent, a validator's own bug, a lost worker...)."""

    error: BaseException
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.frozen(slots=True)
class TimedOut:
    """The attempt exceeded ``timeout_s`` (cancelled at its deadline, or returned late)."""

    error: TimeoutError
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.frozen(slots=True)
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


@attrs.frozen(slots=True)
class Refused:
    """The output cannot be applied (``updates_context``, the run's identity): ``message``."""

    message: str
    cost: Decimal = ZERO
    tokens: int = 0


@attrs.frozen(slots=True)
class CacheHit:
    """The cache answered for the step (its result is the shell's to return)."""


@attrs.frozen(slots=True)
class CacheMissed:
    """The cache had nothing; ``storable``: the input has a key, so a success is stored."""

    storable: bool = True


@attrs.frozen(slots=True)
class FallbackFinished:
    """The fallback step ended; ``success`` is its result's."""

    success: bool


AttemptEvent: TypeAlias = (
    Succeeded | Raised | TimedOut | Rejected | Refused | CacheHit | CacheMissed | FallbackFinished
)


# -- commands (imperative: what the shell does next) ---------------------------------------


@attrs.frozen(slots=True)
class LookUpCache:
    """Ask the cache; answer with :class:`CacheHit` or :class:`CacheMissed`."""


@attrs.frozen(slots=True)
class Invoke:
    """Run attempt ``attempt`` (from 1) of the agent, within ``timeout_s`` (None: no limit).

    ``isolated``: the attempt gets its own copy of the input (there may be
    another run of it). Answer with the attempt's outcome event.
    """

    attempt: int
    timeout_s: float | None
    isolated: bool


@attrs.frozen(slots=True)
class Rollback:
    """Put the context back as it was before the step (a failed attempt's changes go)."""


@attrs.frozen(slots=True)
class EmitRetried:
    """Tell the hooks and the tracer: attempt ``attempt`` failed; retry after ``delay_s``."""

    attempt: int
    feedback: str
    delay_s: float


@attrs.frozen(slots=True)
class MarkStreamRetried:
    """Tell the stream's consumer that the chunks so far belong to failed ``attempt``."""

    attempt: int
    feedback: str


@attrs.frozen(slots=True)
class Sleep:
    """Wait ``seconds`` on the run's clock (0: only check for cancellation)."""

    seconds: float


@attrs.frozen(slots=True)
class Conclude:
    """The primary attempts are over: build the step's result.

    Attributes:
        success: whether the last attempt succeeded.
        attempts: primary attempts made.
        cost: usage of every attempt (failed ones included).
        tokens: tokens of every attempt.
        output: the output (a success's, or the output a validator rejected).
        feedback: why the step failed (None on success).
        error_type: ``metadata["error_type"]`` of a failed step.
        failure: the exception behind the failure, for ``exception_type`` and
            ``traceback`` in the metadata (None: there was none).
    """

    success: bool
    attempts: int
    cost: Decimal
    tokens: int
    output: Any = None
    feedback: str | None = None
    error_type: str | None = None
    failure: BaseException | None = None


@attrs.frozen(slots=True)
class Charge:
    """Report ``cost``/``tokens`` (not reported so far) to the governor.

    ``so_far``: a failed attempt's usage before a retry, charged with the
    step's result so far (attempts made, last feedback); None: charged with
    the result built by the last :class:`Conclude` (or the cache hit).
    """

    cost: Decimal
    tokens: int
    so_far: Conclude | None = None


@attrs.frozen(slots=True)
class RunFallback:
    """Run the fallback step; answer with :class:`FallbackFinished`."""


@attrs.frozen(slots=True)
class StoreInCache:
    """Store the step's successful result in the cache."""


@attrs.frozen(slots=True)
class Finish:
    """The step is over: return its result."""


@attrs.frozen(slots=True)
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

_ROLLBACK: Final = Rollback()
_FINISH: Final = Finish()
_RUN_FALLBACK: Final = RunFallback()
_STORE: Final = StoreInCache()
_LOOK_UP: Final = (LookUpCache(),)
_NO_WAIT: Final = Sleep(0.0)

# States.
_START: Final = 0
_CACHE: Final = 1  # waiting for the cache's answer
_ATTEMPT: Final = 2  # waiting for an attempt's outcome
_FALLBACK: Final = 3  # waiting for the fallback
_DONE: Final = 4
_STATE_NAMES: Final = ("start", "cache", "attempt", "fallback", "done")

_EVENTS_BY_STATE: Final = {
    _CACHE: (CacheHit, CacheMissed),
    _ATTEMPT: (Succeeded, Raised, TimedOut, Rejected, Refused),
    _FALLBACK: (FallbackFinished,),
}


class AttemptMachine:
    """One execution of an agent step, as a state machine (mutable; one per execution).

    Args:
        config: the step's supervision settings (validated when the step was built).
        has_fallback: a fallback step takes over when the attempts are spent.
        cached: the step looks the cache up first (``cache=True`` and a backend).
        charges: the step reports its usage to the governor at the end.
        limited: the run has usage limits: a failed attempt's usage is
            charged before the retry.
        reserved: the step holds a reservation, so it reports even zero usage
            (the reservation is reconciled by that report).
        rolls_back: the context is snapshotted, so failed attempts are rolled back.
        streams: the step streams chunks to a consumer, who is told of retries.

    Attributes:
        attempts: primary attempts started so far.
        cost: usage of every attempt so far (exact).
        tokens: tokens of every attempt so far.
        feedback: the last attempt's failure (None before any, or after a success).
        error_type: its ``error_type``.
    """

    __slots__ = (
        "_charged_cost",
        "_charged_tokens",
        "_storable",
        "attempts",
        "backoff_factor",
        "backoff_s",
        "cached",
        "charges",
        "cost",
        "error_type",
        "feedback",
        "has_fallback",
        "limited",
        "max_attempts",
        "reserved",
        "retry_on",
        "rolls_back",
        "state",
        "streams",
        "timeout_s",
        "tokens",
    )

    def __init__(
        self,
        config: Supervision,
        *,
        has_fallback: bool = False,
        cached: bool = False,
        charges: bool = True,
        limited: bool = False,
        reserved: bool = False,
        rolls_back: bool = False,
        streams: bool = False,
    ) -> None:
        self.max_attempts = config.max_retries + 1
        self.timeout_s = config.timeout_s
        self.backoff_s = config.backoff_s
        self.backoff_factor = config.backoff_factor
        self.retry_on = config.retry_on
        self.has_fallback = has_fallback
        self.cached = cached
        self.charges = charges
        self.limited = limited and charges
        self.reserved = reserved
        self.rolls_back = rolls_back
        self.streams = streams
        self.state = _START
        self.attempts = 0
        self.cost = ZERO
        self.tokens = 0
        self._charged_cost = ZERO
        self._charged_tokens = 0
        self.feedback: str | None = None
        self.error_type: str | None = None
        self._storable = False

    @property
    def isolates(self) -> bool:
        """Whether attempts need their own copy of the input (the agent may run again)."""
        return self.max_attempts > 1 or self.has_fallback

    def start(self) -> tuple[AttemptCommand, ...]:
        """The first commands: look the cache up, or invoke the first attempt."""
        if self.state != _START:
            raise FlujoInternalError(
                f"AttemptMachine.start() called in state {_STATE_NAMES[self.state]!r}"
            )
        if self.cached:
            self.state = _CACHE
            return _LOOK_UP
        return (self._invoke(),)

    def handle(self, event: AttemptEvent) -> tuple[AttemptCommand, ...]:
        """Take one event; the commands to execute next, in order.

        Raises:
            FlujoInternalError: the event is not one the machine waits for now.
        """
        state = self.state
        t = type(event)
        if t not in _EVENTS_BY_STATE.get(state, ()):
            raise FlujoInternalError(
                f"AttemptMachine in state {_STATE_NAMES[state]!r} cannot take {event!r}"
            )
        if t is Succeeded:
            return self._succeeded(event)  # type: ignore[arg-type]
        if t is CacheMissed:
            self._storable = event.storable  # type: ignore[union-attr]
            return (self._invoke(),)
        if t is CacheHit:
            self.state = _DONE
            if self.reserved:
                return (Charge(ZERO, 0), _FINISH)
            return (_FINISH,)
        if t is FallbackFinished:
            self.state = _DONE
            if event.success and self._storable:  # type: ignore[union-attr]
                return (_STORE, _FINISH)
            return (_FINISH,)
        return self._failed(event)  # type: ignore[arg-type]

    # -- transitions -------------------------------------------------------------------
    def _invoke(self) -> Invoke:
        self.state = _ATTEMPT
        self.attempts += 1
        return Invoke(self.attempts, self.timeout_s, self.max_attempts > 1 or self.has_fallback)

    def _use(self, cost: Decimal, tokens: int) -> None:
        if tokens or cost:
            self.cost = add_usd(self.cost, cost)
            self.tokens += tokens

    def _unreported(self, so_far: Conclude | None = None) -> Charge | None:
        cost, tokens = self.cost, self.tokens
        if cost == self._charged_cost and tokens == self._charged_tokens:
            return None
        delta = Charge(sub_usd(cost, self._charged_cost), tokens - self._charged_tokens, so_far)
        self._charged_cost, self._charged_tokens = cost, tokens
        return delta

    def _final_charge(self) -> Charge | None:
        if not self.charges:
            return None
        charge = self._unreported()
        if charge is None and self.reserved:
            return Charge(ZERO, 0)
        return charge

    def _succeeded(self, event: Succeeded) -> tuple[AttemptCommand, ...]:
        self._use(event.cost, event.tokens)
        self.feedback = self.error_type = None
        self.state = _DONE
        done = Conclude(True, self.attempts, self.cost, self.tokens, event.output)
        charge = self._final_charge()
        if self._storable:
            if charge is None:
                return (done, _STORE, _FINISH)
            return (done, charge, _STORE, _FINISH)
        if charge is None:
            return (done, _FINISH)
        return (done, charge, _FINISH)

    def _failed(self, event: Raised | TimedOut | Rejected | Refused) -> tuple[AttemptCommand, ...]:
        self._use(event.cost, event.tokens)
        output: Any = None
        failure: BaseException | None
        if type(event) is Rejected:
            validator = event.by == "validator"
            feedback = (VALIDATION_PREFIX if validator else PLUGIN_PREFIX) + event.message
            error_type = "ValidationError" if validator else "PluginError"
            retryable = True
            failure = event.cause
            if validator:
                output = event.output  # the rejected output, for inspection
        elif type(event) is Refused:
            # A definition problem of the output: another attempt will not fix it.
            feedback, error_type, retryable, failure = (
                event.message,
                "ContextUpdateError",
                False,
                None,
            )
        else:
            exc = event.error  # type: ignore[union-attr]
            if not isinstance(exc, Exception):
                # trio.Cancelled, KeyboardInterrupt...: never retried, never a failure.
                self.state = _DONE
                return (Reraise(exc),)
            name = type(exc).__name__
            feedback, error_type, failure = f"{name}: {exc}", name, exc
            if type(event) is TimedOut or isinstance(exc, ExecutorLost):
                retryable = True  # our own failures: always another attempt
            elif isinstance(exc, (AsyncioInTrioError, UsageReportError, PricingNotConfiguredError)):
                # The wrong event loop, a bad or unpriceable usage report: the same next time.
                retryable = False
            else:
                retryable = is_retried(exc, self.retry_on)
        self.feedback, self.error_type = feedback, error_type
        commands: list[AttemptCommand] = []
        if self.rolls_back:
            commands.append(_ROLLBACK)
        attempts = self.attempts
        if retryable and attempts < self.max_attempts:
            if self.limited:
                # Report this attempt's usage now: a breach must stop the retries.
                so_far = Conclude(
                    False, attempts, self.cost, self.tokens, None, feedback, error_type
                )
                charge = self._unreported(so_far)
                if charge is not None:
                    commands.append(charge)
            delay = backoff_delay(self.backoff_s, self.backoff_factor, attempts)
            commands.append(EmitRetried(attempts, feedback, delay))
            if self.streams:
                commands.append(MarkStreamRetried(attempts, feedback))
            # A zero delay still checks for cancellation: no attempt may start in a
            # cancelled scope (a sync agent would run to completion first).
            commands.append(Sleep(delay) if delay > 0 else _NO_WAIT)
            commands.append(self._invoke())
            return tuple(commands)
        commands.append(
            Conclude(False, attempts, self.cost, self.tokens, output, feedback, error_type, failure)
        )
        charge = self._final_charge()
        if charge is not None:
            commands.append(charge)
        if self.has_fallback:
            self.state = _FALLBACK
            commands.append(_RUN_FALLBACK)
        else:
            self.state = _DONE
            commands.append(_FINISH)
        return tuple(commands)
