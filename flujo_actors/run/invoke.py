"""One agent call: inline on trio, on the run's asyncio loop, or on an executor.

Also :func:`call`, how the engine calls a compiled user callback (a
validator, a loop or conditional callback) whatever its flavour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..errors import FlujoInternalError
from ..policy.stream import ChunkCollector
from ..steps.callables import (
    LATE,
    PLAIN,
    STREAM,
    SYNC,
    AgentSpec,
    Callback,
    drain_stream,
    settle,
)
from ..steps.event_loop import asyncio_in_trio

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from ..steps.agent import AgentStep
    from ..steps.placement import CallSites
    from .core import RunState

__all__ = ["FROM_OUTPUT", "call", "invoke", "no_stream", "streams_inline"]


#: Types whose instances were seen not to be awaitable (nor async generators): one set
#: lookup per call instead of an ABC ``isinstance`` (~0.3 us, on every agent's output).
#: Whether an instance is ``LATE`` depends on its class alone (``Awaitable`` looks for
#: ``__await__`` on the type), so the answer holds for the type; only a class made
#: awaitable *after* it was seen (``Awaitable.register``) would be missed. Bounded: a
#: program that makes classes on the fly must not grow it without end.
_VALUES: set[type] = set(PLAIN)
_VALUES_MAX: Final = 1024


def _late(value: Any) -> bool:
    """Whether ``value`` is not a value yet (a coroutine, an awaitable, an async generator)."""
    if isinstance(value, LATE):
        return True
    if len(_VALUES) >= _VALUES_MAX:
        _VALUES.clear()  # a benign race between threads: a type is checked again
        _VALUES.update(PLAIN)
    _VALUES.add(type(value))
    return False


async def call(cb: Callback, *args: Any) -> Any:
    value = cb.call(*args)
    if cb.is_async or (type(value) not in _VALUES and _late(value)):
        # A sync wrapper around an async callback hands back a coroutine: await it.
        value = await settle(value, no_stream)
    return value


async def no_stream(value: Any) -> Any:
    raise TypeError(f"a callback returned an async generator ({value!r}); return a value instead.")


async def _collect_stream(frame: ExecutionFrame[Any], iterator: Any) -> tuple[Any, Any]:
    """Drain a streaming agent, handing each chunk to the frame's consumer as it arrives."""
    return await drain_stream(iterator, frame.on_chunk if frame.stream else None)


# invoke's "read the usage from the output" marker (the inline, non-streaming path).
FROM_OUTPUT: Final = object()


async def invoke(
    frame: ExecutionFrame[Any], step: AgentStep, data: Any, attempt: int = 1
) -> tuple[Any, Any]:
    """One agent call: its output, and its usage reading (or ``FROM_OUTPUT``)."""
    spec = step.spec
    assert spec is not None
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    if step.placement is not None or run.executor is not None:
        executor = _executor_for(step, run)
        if executor is not None:
            # Placed steps do not stream: the output comes back whole.
            return await _sites(run).submit_step(
                executor, step, data, frame.context, frame.resources, attempt
            )
    if step.on_asyncio:
        return await _invoke_on_asyncio(frame, spec, data)
    try:
        if frame.stream and spec.stream_call is not None:
            return await _collect_stream(
                frame, spec.stream_call(data, frame.context, frame.resources)
            )
        value = spec.call(data, frame.context, frame.resources)
        kind = spec.kind
        if kind == STREAM:
            return await _collect_stream(frame, value)
        if kind != SYNC:
            value = await value
        if type(value) in _VALUES or not _late(value):
            return value, FROM_OUTPUT
        # A plain ``def`` wrapper around an async (or streaming) agent: finish its work.
        return await _settle_late(frame, value)
    except (RuntimeError, TypeError) as exc:
        # Only on failure: asyncio code in a trio step gets an error that says so.
        wrong = asyncio_in_trio(step.name, exc)
        if wrong is None:
            raise
        raise wrong from exc


async def _settle_late(frame: ExecutionFrame[Any], value: Any) -> tuple[Any, Any]:
    """Await (or stream) what a sync wrapper around an async agent handed back."""
    streamed: tuple[Any, Any] | None = None

    async def collect(iterator: Any) -> Any:
        nonlocal streamed
        streamed = await _collect_stream(frame, iterator)
        return streamed[0]

    output = await settle(value, collect)
    return streamed if streamed is not None else (output, FROM_OUTPUT)


async def _invoke_on_asyncio(
    frame: ExecutionFrame[Any], spec: AgentSpec, data: Any
) -> tuple[Any, Any]:
    """Run one attempt of an ``event_loop="asyncio"`` agent on the run's asyncio loop."""
    sites = _sites(frame.run)
    call_on_asyncio, stream_on_asyncio = sites.call_on_asyncio, sites.stream_on_asyncio
    ctx, res = frame.context, frame.resources
    make = spec.stream_call if frame.stream else None
    if make is None and spec.kind == STREAM:
        make = spec.call
    if make is None:
        return await call_on_asyncio(spec, data, ctx, res), FROM_OUTPUT
    on_chunk = frame.on_chunk if frame.stream else None
    # The same chunk rule as a trio stream: a yielded Usage is usage, not output.
    collector = ChunkCollector()
    if on_chunk is None:
        for chunk in await stream_on_asyncio(lambda: make(data, ctx, res), None):
            collector.add(chunk)
    else:
        forward_to = on_chunk

        async def forward(chunk: Any) -> None:
            if collector.add(chunk):
                await forward_to(chunk)

        await stream_on_asyncio(lambda: make(data, ctx, res), forward)
    return collector.output(), collector.readings()


def streams_inline(frame: ExecutionFrame[Any], step: AgentStep) -> bool:
    """Whether ``step`` streams its chunks to the frame's consumer (not placed elsewhere)."""
    spec = step.spec
    if frame.on_chunk is None or spec is None:
        return False
    if spec.kind != STREAM and spec.stream_call is None:
        return False
    run = frame.run
    assert run is not None
    if step.placement is None and run.executor is None:
        return True
    return _executor_for(step, run) is None


def _executor_for(step: AgentStep, run: RunState) -> Any:
    """The executor for ``step`` (its placement, else the run's), or None for inline.

    A step's explicit ``placement="inline"`` wins over ``Flujo(executor=...)``.
    """
    placement = step.placement
    if placement is None:
        placement = run.executor
    if placement is None or placement == "inline":
        return None
    return _sites(run).executor_for(placement)


def _sites(run: RunState | None) -> CallSites:
    sites = run.call_sites if run is not None else None
    if sites is None:
        raise FlujoInternalError(
            "This run has no call sites for placed or asyncio steps: a RunState built "
            "outside Flujo needs call_sites=flujo_actors.call_sites.CALL_SITES."
        )
    return sites
