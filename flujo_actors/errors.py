"""The error tree of flujo_actors.

One root, :class:`FlujoError`; subclasses are grouped by what the caller can do
about them (fix the definition, raise a limit, register a serializer, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy.intensity import RestartRecord
    from .results import PipelineResult

__all__ = [
    "ActorCrashed",
    "ActorStopped",
    "AskTimeout",
    "AsyncioInTrioError",
    "CacheSkippedWarning",
    "ExecutorLost",
    "FlujoError",
    "FlujoInternalError",
    "HookError",
    "HumanInputError",
    "InfiniteFallbackError",
    "LeaseLostError",
    "MailboxFull",
    "MaxChildrenExceeded",
    "PipelineDefinitionError",
    "PricingNotConfiguredError",
    "RestartIntensityExceeded",
    "RunExistsError",
    "RunLeasedError",
    "RunNotFoundError",
    "SerializationError",
    "StateBackendError",
    "StepFailed",
    "UsageLimitExceededError",
    "UsageReportError",
    "only_cancelled",
    "sole_error",
]


class FlujoError(Exception):
    """Root of every error raised by flujo_actors."""


class PipelineDefinitionError(FlujoError, ValueError):
    """A step or pipeline definition is invalid. Fix the code that builds it."""


class InfiniteFallbackError(PipelineDefinitionError):
    """A chain of ``fallback=`` steps revisits a step it already passed through."""


class UsageLimitExceededError(FlujoError):
    """A run spent more than its :class:`UsageLimits` allow.

    ``result`` is the partial :class:`PipelineResult`: every completed step,
    the breaching step last, totals included.
    """

    def __init__(self, message: str, result: PipelineResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class AsyncioInTrioError(FlujoError, RuntimeError):
    """A step running on trio used asyncio; mark it ``event_loop="asyncio"``.

    The attempt is not retried (another attempt on trio fails the same way).
    The asyncio error is ``__cause__``.
    """


class UsageReportError(FlujoError, ValueError):
    """An output's usage is invalid (a negative or non-numeric cost or count) or, under a
    usage limit, cannot be read (register an extractor). The step fails; it is not retried.
    """


class PricingNotConfiguredError(FlujoError):
    """Under a cost limit, a step reported tokens but no cost, and no price is known.

    Attributes:
        step: the step's name.
        model: the model the step reported (None: it named none).

    Install the ``prices`` extra, report ``cost_usd`` from the agent, or register
    a usage extractor that returns a cost. The step fails; it is not retried.
    """

    def __init__(self, message: str, *, step: str = "", model: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.model = model


class StepFailed(FlujoError):
    """A step failed; see ``__cause__`` for the underlying error."""


class SerializationError(FlujoError, TypeError):
    """A value cannot be serialized or rebuilt; the message names the type and the fix."""


class CacheSkippedWarning(UserWarning):
    """A ``cache=True`` step ran (or kept its result) without the cache.

    Warned when the step's input, output or context changes cannot be
    serialized, or a stored entry cannot be rebuilt: the step's result
    stands and nothing is lost, only the cache is skipped. The message
    names the step, the value and the fix.
    """


class StateBackendError(FlujoError):
    """A state backend cannot be used (corrupt or foreign file, schema mismatch, ...)."""


class LeaseLostError(StateBackendError):
    """This process no longer holds the lease of a run it was running.

    Its lease expired (not renewed within ``lease_s``) and another process
    took the run over: this process's run stops, and its writes to the run
    are refused, so the other process's progress is never overwritten.
    """


class RunLeasedError(StateBackendError):
    """A run cannot be resumed here: another live process holds its lease."""


class RunNotFoundError(FlujoError, KeyError):
    """``resume_async`` was given a run id the state backend does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class HumanInputError(FlujoError, ValueError):
    """``resume_async(..., human_input=...)`` got a value the paused step refuses.

    Nothing ran and nothing changed: the run stays paused.
    """


class RunExistsError(FlujoError):
    """A run was started with a ``run_id`` that already names a run.

    Raised by ``run_async``/``stream_async`` (and by a state backend's
    ``create_run``) before anything runs; ``run_id`` is the id. Use a new id,
    continue the stored run with ``resume_async``, or delete it first.
    """

    def __init__(self, message: str, run_id: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id


class HookError(FlujoError):
    """A run hook (or span listener) raised; the run was cancelled.

    Attributes:
        hook: the hook that raised.
        event: the event it was handling (a listener's: ``"span_started(...)"``).
        result: the partial :class:`PipelineResult` (set once the run ended).

    The hook's exception is ``__cause__``.
    """

    def __init__(self, message: str, *, hook: object, event: object) -> None:
        super().__init__(message)
        self.hook = hook
        self.event = event
        self.result: PipelineResult | None = None


class FlujoInternalError(FlujoError):
    """A bug in flujo_actors itself. Please report it."""


class MailboxFull(FlujoError):
    """``tell_nowait`` found the actor's mailbox full (back off or use ``tell``)."""


class MaxChildrenExceeded(FlujoError):
    """A ``DynamicSupervisor`` refused ``start_child``: it already runs ``max_children``."""


class ActorStopped(FlujoError):
    """The actor is not running; the message went to dead letters."""


class AskTimeout(FlujoError, TimeoutError):
    """``ask`` got no reply in time; a reply that comes later goes to dead letters."""


class ActorCrashed(FlujoError):
    """The actor's handler raised while handling an ``ask``; ``__cause__`` is the error."""

    def __init__(
        self, message: str, *, actor: str = "", cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.actor = actor
        self.cause = cause


class RestartIntensityExceeded(FlujoError):
    """A supervisor restarted its children too often; ``history`` lists the restarts.

    ``history``: the :class:`~flujo_actors.actors.RestartRecord` entries of
    the window that broke the limit, oldest first.
    """

    def __init__(self, message: str, history: tuple[RestartRecord, ...] = ()) -> None:
        super().__init__(message)
        self.history = history


class ExecutorLost(FlujoError):
    """The worker running an agent call died; the attempt is retryable."""


def only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is a cancellation: ``trio.Cancelled`` alone, or every leaf of its groups.

    Only a check: the caller re-raises ``exc`` either way (never swallow a
    cancellation).
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(only_cancelled(inner) for inner in exc.exceptions)
    # Imported here: this module is the error tree and loads without trio.
    import trio

    return isinstance(exc, trio.Cancelled)


def sole_error(exc: BaseException) -> BaseException:
    """The one exception inside ``exc``'s (nested) exception groups, else ``exc`` itself.

    A nursery wraps even a single error in an ``ExceptionGroup``; an API that
    owns a nursery of its own raises that error as itself (several errors
    at once stay the group).
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []

    def walk(group: BaseExceptionGroup[BaseException]) -> None:
        for inner in group.exceptions:
            if isinstance(inner, BaseExceptionGroup):
                walk(inner)
            else:
                leaves.append(inner)

    walk(exc)
    return leaves[0] if len(leaves) == 1 else exc
