"""The events a run reports to its hooks: frozen attrs values, named in the past tense.

See :mod:`flujo_actors.hooks` for when each is emitted and how hooks receive
them (this module holds only the values, so anything may import them).

An event never shares a name with an exception: a step that failed is
:class:`StepErrored` (``StepFailed`` is the exception
:class:`flujo_actors.errors.StepFailed`). The old event name ``StepFailed``
still imports from here and from :mod:`flujo_actors.hooks`, as a deprecated
alias of :class:`StepErrored` (a ``DeprecationWarning``; removed in the next
release).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .results import PipelineResult, StepResult

__all__ = [
    "FallbackTriggered",
    "Hook",
    "HookEvent",
    "RunFinished",
    "RunStarted",
    "StepErrored",
    "StepFinished",
    "StepRetried",
    "StepStarted",
    "UsageLimitBreached",
]


@attrs.frozen(kw_only=True)
class RunStarted:
    """A run started (before its first step).

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        initial_input: the run's input (None for a resumed run).
        time: ``trio.current_time()``.
    """

    run_id: str
    pipeline: str
    initial_input: Any
    time: float


@attrs.frozen(kw_only=True)
class StepStarted:
    """A step started executing (at any depth: branches and loop bodies too).

    Attributes:
        run_id: the run's id.
        step: the step's name.
        path: where it sits, e.g. ``("fan", "a", "summarise")``.
        kind: the step's kind (``"agent"``, ``"parallel"``, ``"loop"``, ...).
        data: the step's input.
        time: ``trio.current_time()``.
    """

    run_id: str
    step: str
    path: tuple[str, ...]
    kind: str
    data: Any
    time: float


@attrs.frozen(kw_only=True)
class _StepEnded:
    """The fields of both ends of a step (:class:`StepFinished`, :class:`StepErrored`).

    Not an event itself: match on the two subclasses, which are unrelated to
    each other (``isinstance(errored, StepFinished)`` is false).
    """

    run_id: str
    step: str
    path: tuple[str, ...]
    kind: str
    result: StepResult
    time: float


@attrs.frozen(kw_only=True)
class StepFinished(_StepEnded):
    """A step succeeded; ``result`` is its :class:`StepResult`."""


@attrs.frozen(kw_only=True)
class StepErrored(_StepEnded):
    """A step failed (after its attempts and fallback); ``result.feedback`` says why.

    Formerly ``StepFailed`` (that name is the exception
    :class:`flujo_actors.errors.StepFailed`; the old event name is a deprecated alias).
    """


@attrs.frozen(kw_only=True)
class StepRetried:
    """An attempt of an agent step failed and the step will try again.

    Attributes:
        attempt: the attempt that failed (1 for the first).
        feedback: why it failed.
        delay_s: the backoff before the next attempt.
    """

    run_id: str
    step: str
    path: tuple[str, ...]
    attempt: int = attrs.field(validator=attrs.validators.ge(1))
    feedback: str | None
    delay_s: float
    time: float


@attrs.frozen(kw_only=True)
class FallbackTriggered:
    """A step spent its attempts; its ``fallback`` step runs now.

    Attributes:
        fallback: the fallback step's name.
        feedback: the primary's last failure.
    """

    run_id: str
    step: str
    path: tuple[str, ...]
    fallback: str
    feedback: str | None
    time: float


@attrs.frozen(kw_only=True)
class UsageLimitBreached:
    """The run breached its usage limits; it was cancelled and will raise.

    Attributes:
        message: the ``UsageLimitExceededError`` message.
        step: the breaching step's name (None when a reservation was refused).
        total_cost_usd: the run's total cost, breaching step included.
        total_tokens: the run's total tokens.
    """

    run_id: str
    message: str
    step: str | None
    total_cost_usd: Decimal
    total_tokens: int
    time: float


@attrs.frozen(kw_only=True)
class RunFinished:
    """A run ended with a result (also a failed or breached one; not a cancelled one)."""

    run_id: str
    result: PipelineResult
    success: bool
    time: float


HookEvent: TypeAlias = (
    RunStarted
    | StepStarted
    | StepFinished
    | StepErrored
    | StepRetried
    | FallbackTriggered
    | UsageLimitBreached
    | RunFinished
)

#: What ``Flujo(hooks=...)`` accepts: a callable taking one event (sync or async).
Hook: TypeAlias = Callable[[HookEvent], Awaitable[None] | None]


#: Old event names -> their new classes (deprecated aliases, removed in the next release).
_RENAMED: dict[str, type] = {"StepFailed": StepErrored}


def renamed(module: str, name: str) -> type:
    """The class behind a deprecated event name, with a ``DeprecationWarning``.

    Raises:
        AttributeError: ``name`` is not a renamed event of ``module``.
    """
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(
        f"{module}.{name} is deprecated: the hook event is now {new.__name__} "
        f"({name} is the exception flujo_actors.errors.{name}). Use "
        f"{module}.{new.__name__}; the old name goes in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )
    return new


def __getattr__(name: str) -> type:
    return renamed(__name__, name)


if TYPE_CHECKING:
    # Type checkers see the deprecated name; at run time it is __getattr__'s (it warns).
    StepFailed: TypeAlias = StepErrored
