"""Run hooks: typed events delivered to user callables as a run goes on.

(Over 500 lines: the per-run observer turns each engine notification into a
hook event and a span, and its failure rules (a failing hook or listener
cancels the run; a breach is never masked) read as one piece; the events
(hook_events.py) and logging (hook_logging.py) already live apart.)

``Flujo(..., hooks=[fn, ...])`` calls each hook (a plain or ``async``
function, or any callable) with every event of every run, in order, from the
task where the event happened: a step's events come from that step's own
task, so a slow hook slows that step (and nothing else), and events of
concurrent parallel branches interleave. Events are frozen attrs values
named in the past tense; match on their type:

.. code-block:: python

    async def on_event(event: HookEvent) -> None:
        match event:
            case StepErrored(step=name, result=result):
                print(name, "failed:", result.feedback)

Every StepStarted is followed by exactly one StepFinished or StepErrored,
unless the step is cancelled (a failing sibling branch, a usage breach, the
caller): a cancelled step emits nothing more, and the step whose usage
breached the limits is named by UsageLimitBreached instead. A fallback runs
inside its step (FallbackTriggered, then the step's own StepFinished).

A hook that raises fails the run: the run is cancelled and
:class:`HookError` (naming the hook and the event, the hook's exception
chained as ``__cause__``) is raised from ``run_async``, with the partial
result on ``.result`` (a step whose StepFinished hook raised is not in its
history: the run stopped before recording it). A
:class:`~flujo_actors.UsageLimitExceededError` is
never masked: when the run also breached its limits, that is what is raised
(the hook failure is added to it as a note).

Runs without hooks, tracing or enabled logging build no event and pay one
``is None`` test per step.

Logging: the library logs through :mod:`logging` under the ``flujo_actors``
logger (DEBUG: steps started/finished; INFO: runs, retries, fallbacks,
failed steps, breaches). It installs no handler and, unless that logger is
enabled for INFO at the start of a run, formats and calls nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs
import trio

from .errors import FlujoError, HookError, PipelineDefinitionError
from .hook_events import FallbackTriggered as FallbackTriggered
from .hook_events import Hook as Hook
from .hook_events import HookEvent as HookEvent
from .hook_events import RunFinished as RunFinished
from .hook_events import RunStarted as RunStarted
from .hook_events import StepErrored as StepErrored
from .hook_events import StepFinished as StepFinished
from .hook_events import StepRetried as StepRetried
from .hook_events import StepStarted as StepStarted
from .hook_events import UsageLimitBreached as UsageLimitBreached
from .hook_events import renamed
from .hook_logging import log_event
from .hook_logging import logger as logger
from .results import PipelineResult, StepResult
from .steps.agent import AgentStep
from .tracing import ListenerError, SpanListener, Tracer, is_span_listener

if TYPE_CHECKING:
    from .frames import ExecutionFrame
    from .policy.attempt import EmitRetried
    from .tracing import SpanRecord

__all__ = [
    "FallbackTriggered",
    "Hook",
    "HookError",
    "HookEvent",
    "HookSet",
    "RunFinished",
    "RunObserver",
    "RunStarted",
    "StepErrored",
    "StepFinished",
    "StepRetried",
    "StepStarted",
    "UsageLimitBreached",
    "compile_hooks",
    "logger",
]


# -- compiled hooks -------------------------------------------------------------------


def _label(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async __call__ on instances
    return call is not None and inspect.iscoroutinefunction(call)


@attrs.frozen
class HookSet:
    """A runner's hooks, inspected once: ``(hook, is_async)`` pairs and span listeners."""

    hooks: tuple[tuple[Any, bool], ...] = ()
    listeners: tuple[SpanListener, ...] = ()


_NO_HOOKS: Final = HookSet()


def _check_takes_an_event(owner: str, i: int, hook: Any) -> None:
    # Decided here, once: a hook that cannot take the event would fail every run.
    try:
        sig = inspect.signature(hook)
    except (TypeError, ValueError):
        return  # a builtin without metadata: trust it
    try:
        sig.bind(None)
    except TypeError as exc:
        raise PipelineDefinitionError(
            f"{owner}: hooks[{i}] {_label(hook)} must take one argument (the event); "
            f"it cannot be called as hook(event): {exc}."
        ) from None


def compile_hooks(hooks: Sequence[Any], *, owner: str = "Flujo") -> HookSet:
    """Sort ``hooks`` into event hooks and span listeners, deciding sync/async once.

    An object with ``span_started``/``span_ended`` methods is a span listener
    (and enables tracing); if it is also callable it receives events too.

    Raises:
        PipelineDefinitionError: an item is neither callable nor a span listener,
            or ``hooks`` is not a sequence.
    """
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Sequence):
        raise PipelineDefinitionError(
            f"{owner}: hooks must be a list of callables, got {hooks!r}; pass hooks=[my_hook]."
        )
    compiled: list[tuple[Any, bool]] = []
    listeners: list[SpanListener] = []
    for i, hook in enumerate(hooks):
        if inspect.iscoroutine(hook):
            hook.close()
            raise PipelineDefinitionError(
                f"{owner}: hooks[{i}] is a coroutine object; pass the function itself "
                "(hooks=[my_hook], not hooks=[my_hook(...)])."
            )
        listener = is_span_listener(hook)
        if listener:
            listeners.append(hook)
        if callable(hook):
            _check_takes_an_event(owner, i, hook)
            compiled.append((hook, _is_async(hook)))
        elif not listener:
            raise PipelineDefinitionError(
                f"{owner}: hooks[{i}] must be a callable taking one event (or a span "
                f"listener such as OTelHook()), got {hook!r}."
            )
    return HookSet(tuple(compiled), tuple(listeners))


# -- the per-run observer -------------------------------------------------------------

#: The events about one step: each has ``run_id``, ``step``, ``path`` and ``time``.
_StepEventType: TypeAlias = (
    type[StepStarted]
    | type[StepFinished]
    | type[StepErrored]
    | type[StepRetried]
    | type[FallbackTriggered]
)


def _breaching_result(frame: ExecutionFrame[Any] | None) -> StepResult | None:
    """The StepResult that breached the run, if the cancelled ``frame`` is its step.

    The breaching step is cancelled while the governor checks its charge, so
    its own task never sees its result; the governor kept it.
    """
    if frame is None or frame.step.kind != "agent":
        return None
    event = frame.breach_event
    if event is None or not event.is_set():
        return None
    if frame.run is None:
        return None
    governor = frame.run.governor
    # The governor itself, or an ActorRef to it (its cell holds the instance).
    governor = getattr(getattr(governor, "cell", None), "instance", None) or governor
    breached = getattr(governor, "breached", None)
    result = getattr(breached, "result", None)
    if isinstance(result, StepResult) and result.name == frame.step.name:
        return result
    return None


class RunObserver:
    """One run's hook dispatcher and tracer (``RunState.hooks``; internal).

    Created by the runner only when something observes the run: hooks,
    ``trace=True``, a span listener, or the ``flujo_actors`` logger enabled
    for INFO. The engine calls :meth:`observe_step`, :meth:`retry` and
    :meth:`fallback`; the runner calls the ``run_*`` methods.

    A failing hook inside the run records a :class:`HookError`, cancels the
    run's scope and raises ``trio.Cancelled`` in the task that called it;
    the runner re-raises the error once the run's nursery has closed.
    """

    __slots__ = ("_cancel", "error", "hooks", "pipeline", "run_id", "tracer")

    def __init__(
        self,
        run_id: str,
        pipeline: str,
        hooks: tuple[tuple[Any, bool], ...],
        tracer: Tracer | None,
    ) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.hooks = hooks
        self.tracer = tracer
        self.error: HookError | None = None
        self._cancel: Callable[[], None] | None = None

    @classmethod
    def create(
        cls, hook_set: HookSet | None, *, run_id: str, pipeline: str, trace: bool
    ) -> RunObserver | None:
        """The observer for one run, or None when nothing observes it.

        Must be called inside trio (the tracer reads the clock).

        Raises:
            HookError: a span listener raised on the root span.
        """
        if hook_set is None:
            hook_set = _NO_HOOKS
        hooks = hook_set.hooks
        if logger.isEnabledFor(logging.INFO):
            hooks = ((log_event, False), *hooks)
        tracing = trace or bool(hook_set.listeners)
        if not hooks and not tracing:
            return None
        observer = cls(run_id, pipeline, hooks, None)
        if tracing:
            try:
                observer.tracer = Tracer(pipeline, run_id, hook_set.listeners)
            except ListenerError as exc:
                raise observer._listener_error(exc) from exc.cause
        return observer

    def bind(self, cancel: Callable[[], None]) -> None:
        """Give the observer the run scope's ``cancel`` (once the run nursery is open)."""
        self._cancel = cancel

    # -- failure handling ---------------------------------------------------------------
    def _hook_error(self, hook: object, event: HookEvent, exc: Exception) -> HookError:
        where = f" (step {'/'.join(event.path)!r})" if hasattr(event, "path") else ""
        err = HookError(
            f"Hook {_label(hook)} raised {type(exc).__name__}: {exc} while handling "
            f"{type(event).__name__}{where} in run {self.run_id!r}; the run was cancelled. "
            "Fix the hook or remove it from Flujo(hooks=...).",
            hook=hook,
            event=event,
        )
        err.__cause__ = exc
        return err

    def _listener_error(self, exc: ListenerError) -> HookError:
        err = HookError(
            f"Span listener {_label(exc.listener)} raised {type(exc.cause).__name__}: "
            f"{exc.cause} in {exc.what} in run {self.run_id!r}; the run was cancelled. "
            "Fix the listener or remove it from Flujo(hooks=...).",
            hook=exc.listener,
            event=exc.what,
        )
        err.__cause__ = exc.cause
        return err

    async def _fail(self, err: HookError) -> None:
        """Record ``err``, cancel the run and stop the calling task."""
        if self.error is None:
            self.error = err
        cancel = self._cancel
        if cancel is None:
            raise err
        cancel()
        # The caller is inside the run's scope: this checkpoint raises Cancelled.
        await trio.lowlevel.checkpoint()
        raise err  # pragma: no cover - only if called outside the run's scope

    async def _emit(self, event: HookEvent) -> None:
        for hook, is_async in self.hooks:
            try:
                if is_async:
                    await hook(event)
                else:
                    # A sync callable may still hand back an awaitable (a partial of
                    # an async function): honour it, cheaply for the common None.
                    value = hook(event)
                    if value is not None and inspect.isawaitable(value):
                        await value
            except Exception as exc:
                await self._fail(self._hook_error(hook, event, exc))

    async def _emit_step(
        self, event_type: _StepEventType, frame: ExecutionFrame[Any], **fields: Any
    ) -> None:
        """Emit an ``event_type`` about the frame's step, timed now.

        The run id, step name, path and time are filled in here, the rest
        from ``fields``. A failing hook cancels the run as :meth:`_emit` says.
        """
        await self._emit(
            event_type(
                run_id=self.run_id,
                step=frame.step.name,
                path=frame.path,
                time=trio.current_time(),
                **fields,
            )
        )

    # -- engine notifications -------------------------------------------------------------
    async def observe_step(
        self,
        frame: ExecutionFrame[Any],
        index: int,
        run_step: Callable[[ExecutionFrame[Any]], Awaitable[StepResult]],
    ) -> StepResult:
        """Run ``run_step(frame)`` between StepStarted and StepFinished/StepErrored.

        Cancellation (a failing sibling, a breach, the caller) closes the
        step's span as ``"cancelled"`` and propagates; no event is emitted
        for a cancelled step.
        """
        step = frame.step
        path = frame.path
        tracer = self.tracer
        rec: SpanRecord | None = None
        if tracer is not None:
            try:
                rec = tracer.step_started(path, index, step)
            except ListenerError as exc:
                await self._fail(self._listener_error(exc))
        if self.hooks:
            await self._emit_step(StepStarted, frame, kind=step.kind, data=frame.data)
        if rec is None:
            result = await run_step(frame)
        else:
            assert tracer is not None
            try:
                result = await run_step(frame)
            except trio.Cancelled:
                self._close_quietly(tracer, rec, "cancelled", frame)
                raise
            except Exception:
                self._close_quietly(tracer, rec, "error")
                raise
            try:
                tracer.step_ended(rec, result)
            except ListenerError as exc:
                await self._fail(self._listener_error(exc))
        if self.hooks:
            event_type = StepFinished if result.success else StepErrored
            await self._emit_step(event_type, frame, kind=step.kind, result=result)
        return result

    def _close_quietly(
        self,
        tracer: Tracer,
        rec: SpanRecord,
        outcome: str,
        frame: ExecutionFrame[Any] | None = None,
    ) -> None:
        # Already unwinding: a listener failing now is recorded, not raised
        # (raising here would replace the Cancelled being propagated).
        try:
            breaching = _breaching_result(frame)
            if breaching is not None:
                tracer.step_breached(rec, breaching)
            else:
                tracer.step_cancelled(rec, outcome)
        except ListenerError as exc:
            if self.error is None:
                self.error = self._listener_error(exc)
            if self._cancel is not None:
                self._cancel()

    async def retry(self, frame: ExecutionFrame[Any], retried: EmitRetried) -> None:
        """Attempt ``retried.attempt`` of the frame's step failed; it retries after ``retried.delay_s``.

        ``retried`` is the attempt machine's command: the delay is the one the
        supervisor sleeps, not a recomputation.
        """
        if self.tracer is not None:
            self.tracer.retried(frame.path, retried.delay_s, retried.feedback)
        if self.hooks:
            await self._emit_step(
                StepRetried,
                frame,
                attempt=retried.attempt,
                feedback=retried.feedback,
                delay_s=retried.delay_s,
            )

    async def fallback(self, frame: ExecutionFrame[Any], primary: StepResult) -> None:
        """The frame's step failed (``primary``); its fallback step runs next."""
        fb = frame.step.fallback if isinstance(frame.step, AgentStep) else None
        if fb is None:
            return
        if self.tracer is not None:
            try:
                self.tracer.fallback(frame.path, fb)
            except ListenerError as exc:
                await self._fail(self._listener_error(exc))
        if self.hooks:
            await self._emit_step(
                FallbackTriggered, frame, fallback=fb.name, feedback=primary.feedback
            )

    # -- runner notifications ----------------------------------------------------------
    async def run_started(self, initial_input: Any) -> None:
        """Emit RunStarted (before the run's nursery opens).

        Raises:
            HookError: a hook raised (nothing of the run has started).
        """
        if self.hooks:
            await self._emit(
                RunStarted(
                    run_id=self.run_id,
                    pipeline=self.pipeline,
                    initial_input=initial_input,
                    time=trio.current_time(),
                )
            )

    async def run_finished(
        self,
        result: PipelineResult,
        breach: FlujoError | None = None,
        breaching_step: str | None = None,
    ) -> None:
        """The run's nursery closed with ``result``: finish the trace and emit the last events.

        With ``breach`` (the ``UsageLimitExceededError`` about to be raised;
        ``breaching_step`` names the step whose usage breached, None for a
        refused reservation) this emits UsageLimitBreached then RunFinished
        and never raises: a
        hook failure (now or earlier in the run) becomes a note on
        ``breach``. Otherwise a hook failure of the run, or of RunFinished,
        is raised with the partial result on ``.result``.

        Raises:
            HookError: a hook or listener raised and there was no breach.
        """
        self._bind_outside()
        failed_mid_run = self.error is not None
        tracer = self.tracer
        if tracer is not None:
            outcome = (
                "error"
                if self.error is not None
                else "breached"
                if breach is not None
                else "success"
                if result.success
                else "failure"
            )
            feedback = str(breach) if breach is not None else None
            if feedback is None and not result.success and result.step_history:
                feedback = result.step_history[-1].feedback
            try:
                result.trace = tracer.finish(
                    outcome, result.total_cost_usd, result.total_tokens, feedback
                )
            except ListenerError as exc:
                if self.error is None:
                    self.error = self._listener_error(exc)
                result.trace = tracer.root.freeze()
        if self.error is None and self.hooks:
            now = trio.current_time()
            try:
                if breach is not None:
                    await self._emit(
                        UsageLimitBreached(
                            run_id=self.run_id,
                            message=str(breach),
                            step=breaching_step,
                            total_cost_usd=result.total_cost_usd,
                            total_tokens=result.total_tokens,
                            time=now,
                        )
                    )
                await self._emit(
                    RunFinished(run_id=self.run_id, result=result, success=result.success, time=now)
                )
            except HookError:
                pass  # recorded in self.error by _fail
        err = self.error
        if err is None:
            return
        if failed_mid_run:
            # The failing hook cancelled the run: it did not complete.
            result.success = False
            result.output = None
            if result.status == "completed":
                result.status = "failed"
        err.result = result
        if breach is not None:
            breach.add_note(f"A hook also failed: {err}")
            return
        raise err

    def _bind_outside(self) -> None:
        # After the run's nursery closed there is no scope to cancel: a
        # failing hook is raised directly.
        self._cancel = None


def __getattr__(name: str) -> type:
    # Deprecated event names (StepFailed -> StepErrored) still import, with a warning.
    return renamed(__name__, name)


if TYPE_CHECKING:
    from .hook_events import StepFailed as StepFailed
