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

The events and commands themselves are in :mod:`.attempt_messages`
(re-exported here).

Each :meth:`AttemptMachine.handle` returns a tuple of commands to execute
in order; the last one is the only one that waits for an event
(:class:`Invoke`, :class:`LookUpCache`, :class:`RunFallback`) or ends the
step (:class:`Finish`, :class:`Reraise`). Feeding an event the machine does
not expect is a :class:`~flujo_actors.errors.FlujoInternalError`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import (
    AsyncioInTrioError,
    ExecutorLost,
    FlujoInternalError,
    PricingNotConfiguredError,
    UsageReportError,
)
from ..results import ZERO, add_usd, sub_usd
from . import attempt_messages as msg

# The events and commands are attempt_messages' (one list, its __all__): re-exported
# here, where readers of the machine look for them.
from .attempt_messages import *  # noqa: F403
from .retry import is_retried

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = [
    "PLUGIN_PREFIX",
    "VALIDATION_PREFIX",
    "AttemptMachine",
    "Supervision",
    "backoff_delay",
    "fallback_feedback",
]
__all__ += msg.__all__

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


_ROLLBACK: Final = msg.Rollback()
_CONCLUDE: Final = msg.Conclude()
_FINISH: Final = msg.Finish()
_RUN_FALLBACK: Final = msg.RunFallback()
_STORE: Final = msg.StoreInCache()
_LOOK_UP: Final = (msg.LookUpCache(),)
_NO_WAIT: Final = msg.Sleep(0.0)
_NO_CHARGE: Final = msg.Charge(ZERO, 0)
# The common answers, built once: a first attempt without a timeout, and a
# success with nothing to charge or store.
_FIRST: Final = {False: (msg.Invoke(1, None, False),), True: (msg.Invoke(1, None, True),)}
_SUCCEEDED: Final = (_CONCLUDE, _FINISH)

# States.
_START: Final = 0
_CACHE: Final = 1  # waiting for the cache's answer
_ATTEMPT: Final = 2  # waiting for an attempt's outcome
_FALLBACK: Final = 3  # waiting for the fallback
_DONE: Final = 4
_STATE_NAMES: Final = ("start", "cache", "attempt", "fallback", "done")

_EVENTS_BY_STATE: Final = {
    _CACHE: (msg.CacheHit, msg.CacheMissed),
    _ATTEMPT: (msg.Succeeded, msg.Raised, msg.TimedOut, msg.Rejected, msg.Refused),
    _FALLBACK: (msg.FallbackFinished,),
}


class AttemptMachine:
    """One execution of an agent step, as a state machine (mutable; one per execution).

    Between two events, its attributes describe the step so far; a shell
    executes the commands of one :meth:`handle` before it feeds the next
    event, so they describe the step when it executes them.

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
        config: the settings.
        attempts: primary attempts whose outcome is known.
        succeeded: whether the last attempt succeeded.
        cost: usage of every attempt so far (exact; failed attempts' too).
        tokens: tokens of every attempt so far.
        output: the last attempt's output (a success's, or one a validator rejected).
        feedback: the last attempt's failure (None before any, or after a success).
        error_type: its ``metadata["error_type"]``.
        failure: the exception behind it, if any.
    """

    __slots__ = (
        "_charged_cost",
        "_charged_tokens",
        "_storable",
        "attempts",
        "cached",
        "charges",
        "config",
        "cost",
        "error_type",
        "failure",
        "feedback",
        "has_fallback",
        "limited",
        "output",
        "reserved",
        "rolls_back",
        "state",
        "streams",
        "succeeded",
        "tokens",
    )

    def __init__(
        self,
        config: Supervision,
        has_fallback: bool = False,
        cached: bool = False,
        charges: bool = True,
        limited: bool = False,
        reserved: bool = False,
        rolls_back: bool = False,
        streams: bool = False,
    ) -> None:
        # Positional too: the supervisor passes them so (keywords cost ~1 us per step).
        self.config = config
        self.has_fallback = has_fallback
        self.cached = cached
        self.charges = charges
        self.limited = limited and charges
        self.reserved = reserved
        self.rolls_back = rolls_back
        self.streams = streams
        self.state = _START
        self.attempts = 0
        self.succeeded = False
        self.cost = ZERO
        self.tokens = 0
        self.output: Any = None
        self.feedback: str | None = None
        self.error_type: str | None = None
        self.failure: BaseException | None = None
        self._charged_cost = ZERO
        self._charged_tokens = 0
        self._storable = False

    def start(self) -> tuple[msg.AttemptCommand, ...]:
        """The first commands: look the cache up, or invoke the first attempt."""
        if self.state != _START:
            raise FlujoInternalError(
                f"AttemptMachine.start() called in state {_STATE_NAMES[self.state]!r}"
            )
        if self.cached:
            self.state = _CACHE
            return _LOOK_UP
        return self._invoke()

    def handle(self, event: msg.AttemptEvent) -> tuple[msg.AttemptCommand, ...]:
        """Take one event; the commands to execute next, in order.

        Raises:
            FlujoInternalError: the event is not one the machine waits for now.
        """
        state = self.state
        t = type(event)
        if t is msg.Succeeded and state == _ATTEMPT:
            return self.succeed(event.output, event.cost, event.tokens)  # type: ignore[union-attr]
        if t not in _EVENTS_BY_STATE.get(state, ()):
            raise FlujoInternalError(
                f"AttemptMachine in state {_STATE_NAMES[state]!r} cannot take {event!r}"
            )
        if t is msg.CacheMissed:
            self._storable = event.storable  # type: ignore[union-attr]
            return self._invoke()
        if t is msg.CacheHit:
            self.state = _DONE
            if self.reserved:
                return (_NO_CHARGE, _FINISH)
            return (_FINISH,)
        if t is msg.FallbackFinished:
            self.state = _DONE
            if event.success and self._storable:  # type: ignore[union-attr]
                return (_STORE, _FINISH)
            return (_FINISH,)
        return self._failed(event)  # type: ignore[arg-type]

    # -- transitions -------------------------------------------------------------------
    def _invoke(self) -> tuple[msg.Invoke]:
        self.state = _ATTEMPT
        config = self.config
        # An attempt needs its own copy of the input when the agent may run again.
        isolated = config.max_retries > 0 or self.has_fallback
        timeout = config.timeout_s
        if self.attempts == 0 and timeout is None:
            return _FIRST[isolated]
        return (msg.Invoke(self.attempts + 1, timeout, isolated),)

    def _unreported(self, interim: bool = False) -> msg.Charge | None:
        cost, tokens = self.cost, self.tokens
        charged = self._charged_cost
        if charged is ZERO and not self._charged_tokens:
            # Nothing reported yet: all of it is new (and stays the same object).
            if not cost and not tokens:
                return None
            delta = msg.Charge(cost, tokens, interim)
        elif cost == charged and tokens == self._charged_tokens:
            return None
        else:
            delta = msg.Charge(sub_usd(cost, charged), tokens - self._charged_tokens, interim)
        self._charged_cost, self._charged_tokens = cost, tokens
        return delta

    def _final_charge(self) -> msg.Charge | None:
        if not self.charges:
            return None
        charge = self._unreported()
        if charge is None and self.reserved:
            return _NO_CHARGE
        return charge

    def succeed(
        self, output: Any, cost: Decimal = ZERO, tokens: int = 0
    ) -> tuple[msg.AttemptCommand, ...]:
        """``handle(Succeeded(output, cost, tokens))`` without building the event.

        The supervisor's success path calls this (one allocation less per step).

        Raises:
            FlujoInternalError: the machine is not waiting for an attempt's outcome.
        """
        if self.state != _ATTEMPT:
            raise FlujoInternalError(
                f"AttemptMachine in state {_STATE_NAMES[self.state]!r} cannot take "
                f"{msg.Succeeded(output, cost, tokens)!r}"
            )
        self.attempts += 1
        if tokens or cost:
            # The first usage is the total as it is: the same Decimal object goes on to
            # the governor, which counts repeats of one object without arithmetic.
            self.cost = cost if self.cost is ZERO else add_usd(self.cost, cost)
            self.tokens += tokens
        self.succeeded = True
        self.output = output
        if self.feedback is not None:  # a failed attempt before this one
            self.feedback = self.error_type = self.failure = None
        self.state = _DONE
        charge = (
            self._final_charge()
            if self.charges and (self.reserved or self.tokens or self.cost)
            else None
        )
        if self._storable:
            if charge is None:
                return (_CONCLUDE, _STORE, _FINISH)
            return (_CONCLUDE, charge, _STORE, _FINISH)
        if charge is None:
            return _SUCCEEDED
        return (_CONCLUDE, charge, _FINISH)

    def _failed(
        self, event: msg.Raised | msg.TimedOut | msg.Rejected | msg.Refused
    ) -> tuple[msg.AttemptCommand, ...]:
        self.attempts += 1
        output: Any = None
        failure: BaseException | None
        if type(event) is msg.Rejected:
            validator = event.by == "validator"
            feedback = (VALIDATION_PREFIX if validator else PLUGIN_PREFIX) + event.message
            error_type = "ValidationError" if validator else "PluginError"
            retryable = True
            failure = event.cause
            if validator:
                output = event.output  # the rejected output, for inspection
        elif type(event) is msg.Refused:
            # A definition problem of the output: another attempt will not fix it.
            feedback, error_type = event.message, "ContextUpdateError"
            retryable, failure = False, None
        else:
            exc = event.error  # type: ignore[union-attr]
            if not isinstance(exc, Exception):
                # trio.Cancelled, KeyboardInterrupt...: never retried, never a failure.
                self.state = _DONE
                return (msg.Reraise(exc),)
            name = type(exc).__name__
            feedback, error_type, failure = f"{name}: {exc}", name, exc
            if type(event) is msg.TimedOut or isinstance(exc, ExecutorLost):
                retryable = True  # our own failures: always another attempt
            elif isinstance(exc, (AsyncioInTrioError, UsageReportError, PricingNotConfiguredError)):
                # The wrong event loop, a bad or unpriceable usage report: the same next time.
                retryable = False
            else:
                retryable = is_retried(exc, self.config.retry_on)
        if event.tokens or event.cost:
            self.cost = add_usd(self.cost, event.cost)
            self.tokens += event.tokens
        self.succeeded = False
        self.output = output
        self.feedback, self.error_type, self.failure = feedback, error_type, failure
        commands: list[msg.AttemptCommand] = []
        if self.rolls_back:
            commands.append(_ROLLBACK)
        attempts = self.attempts
        config = self.config
        if retryable and attempts <= config.max_retries:
            if self.limited:
                # Report this attempt's usage now: a breach must stop the retries.
                charge = self._unreported(interim=True)
                if charge is not None:
                    commands.append(charge)
            delay = backoff_delay(config.backoff_s, config.backoff_factor, attempts)
            commands.append(msg.EmitRetried(attempts, feedback, delay))
            if self.streams:
                commands.append(msg.MarkStreamRetried(attempts, feedback))
            # A zero delay still checks for cancellation: no attempt may start in a
            # cancelled scope (a sync agent would run to completion first).
            commands.append(msg.Sleep(delay) if delay > 0 else _NO_WAIT)
            commands.extend(self._invoke())
            return tuple(commands)
        commands.append(_CONCLUDE)
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
