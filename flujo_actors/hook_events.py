"""The events a run reports to its hooks: frozen attrs values, named in the past tense.

See :mod:`flujo_actors.hooks` for when each is emitted and how hooks receive
them (this module holds only the values, so anything may import them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeAlias

import attrs

from .results import PipelineResult, StepResult

__all__ = [
    "FallbackTriggered",
    "Hook",
    "HookEvent",
    "RunFinished",
    "RunStarted",
    "StepFailed",
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
class StepFinished:
    """A step succeeded; ``result`` is its :class:`StepResult`."""

    run_id: str
    step: str
    path: tuple[str, ...]
    kind: str
    result: StepResult
    time: float


@attrs.frozen(kw_only=True)
class StepFailed:
    """A step failed (after its attempts and fallback); ``result.feedback`` says why."""

    run_id: str
    step: str
    path: tuple[str, ...]
    kind: str
    result: StepResult
    time: float


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
    | StepFailed
    | StepRetried
    | FallbackTriggered
    | UsageLimitBreached
    | RunFinished
)

#: What ``Flujo(hooks=...)`` accepts: a callable taking one event (sync or async).
Hook: TypeAlias = Callable[[HookEvent], Awaitable[None] | None]
