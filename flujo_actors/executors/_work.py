"""What crosses the executor boundary, and how a worker runs it.

(Over 500 lines on purpose: the one work-item contract (build, run in the
worker, result as data) shared by every executor.)

A step actor never sends itself, its mailbox, the governor or any trio
object to an executor: it sends a :class:`WorkItem` (how to call the agent,
the input, a snapshot of the context when the agent declares ``context``,
the attempt number and a wall-clock deadline) and gets a :class:`WorkResult`
back (the output, its usage, the context fields the agent changed, or the
error as data). Everything here is plain data plus sync/async functions, so
the same code runs in the step actor's task (inline), in a process-pool
worker and in a Ray worker.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import time
import traceback
import weakref
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ..context import copy_context, snapshot_context
from ..errors import FlujoError, SerializationError
from ..policy.deadline import (
    expired,
    not_started_message,
    to_local,
    to_wall,
    worker_timed_out_message,
)
from ..policy.idempotency import POSITION
from ..policy.usage import UsageUnreadable, usage_of
from ..results import ZERO, Usage, add_usd
from ..steps.callables import LATE, STREAM, SYNC, AgentSpec, drain_stream, settle

if TYPE_CHECKING:
    from ..steps.agent import AgentStep

__all__ = [
    "ErrorInfo",
    "RemoteAgentError",
    "WorkItem",
    "WorkResult",
    "arun_pickled",
    "arun_work_item",
    "build_work_item",
    "decode_result",
    "encode_item",
    "run_pickled",
    "run_work_item",
]

_UNCALLED: Final = object()  # _call_async: call the agent first


class RemoteAgentError(FlujoError):
    """An agent failed in a worker with an exception type this process cannot rebuild.

    Attributes:
        type_name: the remote exception's ``module.QualName``.
        remote_traceback: the traceback text formatted in the worker.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """An agent's exception as data, so it can cross a process boundary.

    Attributes:
        module: the exception type's module.
        qualname: the exception type's qualified name.
        message: ``str(exc)``.
        traceback: the formatted traceback, as text.
        pickled: the exception itself, pickled, when that was possible.
        exception: the live exception (in-process executors only; never sent).
    """

    module: str
    qualname: str
    message: str
    traceback: str = ""
    pickled: bytes | None = None
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def type_name(self) -> str:
        """``module.QualName`` of the exception type (builtins are bare names)."""
        return self.qualname if self.module == "builtins" else f"{self.module}.{self.qualname}"

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture ``exc`` (type, message, traceback text; keeps the live object)."""
        t = type(exc)
        return cls(
            module=t.__module__,
            qualname=t.__qualname__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            exception=exc,
        )

    def to_exception(self) -> BaseException:
        """The exception to raise locally.

        In order: the live exception (inline), the unpickled exception, an
        instance of the type rebuilt by name from ``message`` when the type is
        importable here, else a :class:`RemoteAgentError`. Exceptions that
        crossed a process boundary get the remote traceback as a note.
        """
        if self.exception is not None:
            return self.exception
        exc: BaseException | None = None
        if self.pickled is not None:
            try:
                loaded = _loads(self.pickled)
            except Exception:
                loaded = None
            if isinstance(loaded, BaseException):
                exc = loaded
        if exc is None:
            exc = self._rebuild()
        if self.traceback and not isinstance(exc, RemoteAgentError):
            exc.add_note(f"Remote traceback:\n{self.traceback.rstrip()}")
        return exc

    def _rebuild(self) -> BaseException:
        try:
            obj: Any = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, type) and issubclass(obj, Exception):
                return obj(self.message)
        except Exception:  # not importable here, or not constructible from a message
            pass
        return RemoteAgentError(self.type_name, self.message, self.traceback)


@attrs.frozen(kw_only=True)
class WorkItem:
    """One agent call, as it is sent to an executor (picklable with cloudpickle).

    Attributes:
        step_name: the step's name (for messages and task names).
        agent: how to call the agent, compiled when the step was built.
        data: the attempt's input.
        context: a snapshot (copy) of the context when the agent declares
            ``context``, else None. The worker mutates this copy; the changed
            fields come back in :attr:`WorkResult.context_updates`.
        resources: the run's resources when the agent declares ``resources``.
        attempt: the attempt number, from 1.
        deadline: wall-clock time (``time.time()``) after which the result is
            no longer wanted, or None. A worker that picks the item up after
            its deadline does not call the agent; an async agent is cancelled
            at the deadline.
        position: ``(run_id, step position)`` when the agent declares
            ``idempotency_key`` (the worker derives the same key from it).
    """

    step_name: str
    agent: AgentSpec
    data: Any
    context: Any = None
    resources: Any = None
    attempt: int = 1
    deadline: float | None = None
    position: tuple[str, tuple[Any, ...]] | None = None


@attrs.frozen(kw_only=True)
class WorkResult:
    """What comes back from an executor: an output or an error, never both.

    Attributes:
        output: the agent's output (None on error).
        cost_usd: the output's reported cost (exact Decimal; 0 when unknown:
            pricing happens in the step actor).
        token_counts: the output's reported tokens.
        usage: the usage read in the worker by
            :func:`~flujo_actors.policy.usage.usage_of` (a streaming agent's:
            its usage chunks), or None when the output reports none.
        context_updates: the context fields the agent changed, by name (only
            on success); the step actor writes them onto the live context.
        error: the agent's exception as data, or None.
        worker: where the call ran, for diagnostics (``"pid 123 on host"``).
    """

    output: Any = None
    cost_usd: Decimal = ZERO
    token_counts: int = 0
    usage: Usage | UsageUnreadable | list[Usage | UsageUnreadable] | None = None
    context_updates: Mapping[str, Any] = attrs.field(factory=dict)
    error: ErrorInfo | None = None
    worker: str = ""


def _wall_deadline() -> float | None:
    return to_wall(trio.current_effective_deadline(), trio.current_time(), time.time())


def _local_deadline(item: WorkItem) -> float:
    return to_local(item.deadline, trio.current_time(), time.time())


def build_work_item(
    step: AgentStep, data: Any, context: Any, resources: Any, attempt: int
) -> WorkItem:
    """The work item for one attempt of ``step`` (call inside trio).

    The context is copied only when the agent declares ``context``; the
    deadline is the caller's effective trio deadline converted to wall-clock
    time.
    """
    spec = step.spec
    assert spec is not None
    return WorkItem(
        step_name=step.name,
        agent=spec,
        data=data,
        context=copy_context(context) if spec.accepts_context and context is not None else None,
        resources=resources if spec.accepts_resources else None,
        attempt=attempt,
        deadline=_wall_deadline(),
        position=POSITION.get(None) if spec.accepts_idempotency_key else None,
    )


def _differs(old: Any, new: Any) -> bool:
    if old is new:
        return False
    try:
        return bool(old != new)
    except Exception:  # e.g. arrays whose != is not a bool: assume changed
        return True


@functools.cache
def _host() -> str:
    import socket  # only workers need it: keep `import flujo_actors` lean

    return socket.gethostname()


def _worker_name() -> str:
    return f"pid {os.getpid()} on {_host()}"


def _failed(exc: BaseException) -> WorkResult:
    """The result of an attempt that failed in this worker: the error, as data."""
    return WorkResult(error=ErrorInfo.from_exception(exc), worker=_worker_name())


def _begin(item: WorkItem) -> tuple[WorkResult | None, dict[str, Any] | None]:
    """Before the agent is called: an expired item's result, else the context as it was."""
    if expired(item.deadline, time.time()):
        return _failed(TimeoutError(not_started_message(item.step_name, item.attempt))), None
    if item.position is not None:
        POSITION.set(item.position)  # the agent's idempotency_key, in this worker
    return None, snapshot_context(item.context) if item.context is not None else None


def _totals(
    reading: Usage | UsageUnreadable | list[Usage | UsageUnreadable] | None,
) -> tuple[Decimal, int]:
    """What the output reports, unpriced (the step actor prices and checks limits)."""
    reports = reading if isinstance(reading, list) else [reading]
    cost, tokens = ZERO, 0
    for u in reports:
        if isinstance(u, Usage):
            cost, tokens = add_usd(cost, u.cost_usd or ZERO), tokens + u.tokens
    return cost, tokens


def _finish(item: WorkItem, raw: Any, before: dict[str, Any] | None) -> WorkResult:
    output, streamed = (raw.output, raw.usage) if type(raw) is _Streamed else (raw, None)
    try:
        reading = streamed if streamed is not None else usage_of(output, step_name=item.step_name)
    except Exception as exc:  # a bad report fails the attempt, as data (same message as inline)
        return _failed(exc)
    cost, tokens = _totals(reading)
    updates: dict[str, Any] = {}
    if before is not None:
        ctx = item.context
        for name, old in before.items():
            new = getattr(ctx, name)
            if _differs(old, new):
                updates[name] = new
    return WorkResult(
        output=output,
        cost_usd=cost,
        token_counts=tokens,
        usage=reading,
        context_updates=updates,
        worker=_worker_name(),
    )


class _Streamed:
    """A drained stream in a worker: its output and its usage reports."""

    __slots__ = ("output", "usage")

    def __init__(self, output: Any, usage: list[Usage | UsageUnreadable] | None) -> None:
        self.output = output
        self.usage = usage


async def _collect(iterator: Any) -> _Streamed:
    # The inline path's drain: Usage chunks are usage, not output; the generator is closed.
    output, usage = await drain_stream(iterator)
    return _Streamed(output, usage)


async def _call_async(item: WorkItem, value: Any = _UNCALLED) -> Any:
    spec = item.agent
    if value is _UNCALLED:
        value = spec.call(item.data, item.context, item.resources)
        if spec.kind == STREAM:
            return await _collect(value)
    # Also what a sync wrapper around an async agent handed back (a coroutine).
    return await settle(value, _collect)


async def _arun(
    item: WorkItem, before: dict[str, Any] | None, value: Any = _UNCALLED
) -> WorkResult:
    """Call the agent in this trio task (``value``: what its sync call already handed back)."""
    try:
        if value is _UNCALLED and item.agent.kind == SYNC:
            value = item.agent.call(item.data, item.context, item.resources)
            if not isinstance(value, LATE):
                return _finish(item, value, before)
        output = await _call_async(item, value)
    except Exception as exc:
        return _failed(exc)
    return _finish(item, output, before)


async def _arun_until(
    item: WorkItem, before: dict[str, Any] | None, value: Any = _UNCALLED
) -> WorkResult:
    """:func:`_arun`, cancelled at the item's deadline (a worker's trio run)."""
    if item.deadline is None:
        return await _arun(item, before, value)
    with trio.move_on_at(_local_deadline(item)):
        return await _arun(item, before, value)
    return _failed(TimeoutError(worker_timed_out_message(item.step_name, item.attempt)))


async def arun_work_item(item: WorkItem) -> WorkResult:
    """Run ``item`` in the current trio task (the inline executor).

    Cancellation reaches the agent directly: ``trio.Cancelled`` propagates
    and is never turned into a result.
    """
    done, before = _begin(item)
    return done if done is not None else await _arun(item, before)


def run_work_item(item: WorkItem) -> WorkResult:
    """Run ``item`` to completion in a worker (sync; async agents get a trio run).

    A sync agent cannot be interrupted from inside: the caller stops it by
    killing or cancelling the worker. An async agent is also cancelled at the
    item's deadline.
    """
    done, before = _begin(item)
    if done is not None:
        return done
    value: Any = _UNCALLED
    if item.agent.kind == SYNC:
        try:
            value = item.agent.call(item.data, item.context, item.resources)
        except Exception as exc:
            return _failed(exc)
        if not isinstance(value, LATE):
            return _finish(item, value, before)
        # A sync wrapper around an async agent: run what it handed back.
    return trio.run(_arun_until, item, before, value)


# -- the wire: cloudpickle both ways -------------------------------------------------


def _cloudpickle() -> Any:
    import cloudpickle

    return cloudpickle


def _loads(data: bytes) -> Any:
    try:
        cp = _cloudpickle()
    except ImportError:
        return pickle.loads(data)
    return cp.loads(data)


def _part_that_fails(cp: Any, parts: Mapping[str, Any]) -> tuple[str, Any, Exception] | None:
    for name, value in parts.items():
        try:
            cp.dumps(value)
        except Exception as exc:
            return name, value, exc
    return None


# The agent's compiled call is the costly part of a work item to pickle (its
# lambdas travel by value): pickle it once per step, and unpickle it once per
# worker. The wire format is private to encode_item / _load_item.
_SPEC_BYTES: weakref.WeakKeyDictionary[AgentSpec, bytes] = weakref.WeakKeyDictionary()
_SPECS_SEEN: dict[bytes, AgentSpec] = {}
_SPECS_SEEN_MAX: Final = 256
# Every other field of a WorkItem travels as is, in this order.
_WIRE_FIELDS: Final = tuple(f.name for f in attrs.fields(WorkItem) if f.name != "agent")


def encode_item(item: WorkItem, where: str) -> bytes:
    """Pickle ``item`` (cloudpickle, so closures and lambdas travel).

    Raises:
        SerializationError: a part of the item cannot be pickled; the message
            names the step, the part, its type and the fix.
    """
    cp = _cloudpickle()
    try:
        spec = _SPEC_BYTES.get(item.agent)
        if spec is None:
            spec = _SPEC_BYTES[item.agent] = bytes(cp.dumps(item.agent))
        return bytes(cp.dumps((spec, tuple(getattr(item, name) for name in _WIRE_FIELDS))))
    except Exception as exc:
        found = _part_that_fails(
            cp,
            {
                "input": item.data,
                "context": item.context,
                "resources": item.resources,
                "agent": item.agent,
            },
        )
        part, value, cause = found if found is not None else ("work item", item, exc)
        raise SerializationError(
            f"Step {item.step_name!r}: its {part} of type {type(value).__qualname__} cannot be "
            f"sent to the {where}: {type(cause).__name__}: {cause}. Make it picklable, or run "
            "this step inline (placement='inline')."
        ) from exc


def _decode_item(cp: Any, payload: bytes) -> WorkItem:
    spec_bytes, values = cp.loads(payload)
    spec = _SPECS_SEEN.get(spec_bytes)
    if spec is None:
        spec = cp.loads(spec_bytes)
        if len(_SPECS_SEEN) >= _SPECS_SEEN_MAX:
            _SPECS_SEEN.clear()
        _SPECS_SEEN[spec_bytes] = spec
    return WorkItem(agent=spec, **dict(zip(_WIRE_FIELDS, values, strict=True)))


def _pickled_failure(cp: Any, problem: Exception, worker: str) -> bytes:
    """A pickled result failing with ``problem`` (its message and type; not the object)."""
    info = attrs.evolve(ErrorInfo.from_exception(problem), exception=None)
    return bytes(cp.dumps(WorkResult(error=info, worker=worker)))


def _encode_result(result: WorkResult, item_name: str, where: str) -> bytes:
    cp = _cloudpickle()
    err = result.error
    if err is not None and err.exception is not None:
        try:
            pickled: bytes | None = bytes(cp.dumps(err.exception))
        except Exception:
            pickled = None
        result = attrs.evolve(result, error=attrs.evolve(err, pickled=pickled, exception=None))
    try:
        return bytes(cp.dumps(result))
    except Exception as exc:
        found = _part_that_fails(
            cp, {"output": result.output, "context": dict(result.context_updates)}
        )
        part, value, cause = found if found is not None else ("result", result, exc)
        problem = SerializationError(
            f"Step {item_name!r}: its {part} of type {type(value).__qualname__} cannot be sent "
            f"back from the {where}: {type(cause).__name__}: {cause}. Return picklable values "
            "(plain data, or instances of importable classes), or run this step inline "
            "(placement='inline')."
        )
        return _pickled_failure(cp, problem, result.worker)


def _load_item(payload: bytes, where: str) -> WorkItem | bytes:
    """The unpickled item, or the pickled error result saying why it cannot be loaded."""
    cp = _cloudpickle()
    try:
        item = _decode_item(cp, payload)
    except Exception as exc:
        problem = SerializationError(
            f"the {where} worker ({_worker_name()}) cannot unpickle a work item: "
            f"{type(exc).__name__}: {exc}. The agent, its input and its context must be "
            "importable in the worker (install your package there, or define them in "
            "__main__ so cloudpickle sends them by value)."
        )
        return _pickled_failure(cp, problem, _worker_name())
    return item


def run_pickled(payload: bytes, where: str) -> bytes:
    """Worker entry point: unpickle a :class:`WorkItem`, run it, pickle the result.

    Never raises for an agent's failure: errors travel back as data.
    """
    item = _load_item(payload, where)
    if isinstance(item, bytes):
        return item
    return _encode_result(run_work_item(item), item.step_name, where)


async def arun_pickled(payload: bytes, where: str) -> bytes:
    """:func:`run_pickled` for a worker that is already inside trio (a Ray actor's guest run).

    Async agents run as tasks of that run, bounded by the item's deadline;
    sync agents run in a thread (abandoned, not stopped, if cancelled).
    Cancellation propagates as ``trio.Cancelled``.
    """
    item = _load_item(payload, where)
    if isinstance(item, bytes):
        return item
    if item.agent.kind == SYNC:
        result = await trio.to_thread.run_sync(run_work_item, item, abandon_on_cancel=True)
    else:
        done, before = _begin(item)
        result = done if done is not None else await _arun_until(item, before)
    return _encode_result(result, item.step_name, where)


def decode_result(raw: bytes, step_name: str, where: str) -> WorkResult:
    """Unpickle a worker's :class:`WorkResult`.

    Raises:
        SerializationError: the bytes cannot be unpickled here.
    """
    try:
        result = _loads(raw)
    except Exception as exc:
        raise SerializationError(
            f"Step {step_name!r}: the result sent back by the {where} cannot be unpickled "
            f"here: {type(exc).__name__}: {exc}. Its types must be importable in this process."
        ) from exc
    if not isinstance(result, WorkResult):
        raise SerializationError(
            f"Step {step_name!r}: the {where} sent back {type(result).__qualname__}, "
            "expected a WorkResult."
        )
    return result
