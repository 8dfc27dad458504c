"""Agents on asyncio inside a trio run, through trio-asyncio.

A run whose pipeline has an asyncio step (decided when the runner is built)
opens one asyncio loop for the whole run (:func:`open_run_loop`); each
attempt of such a step runs its agent as an asyncio task on that loop and the
step actor waits for it without blocking trio. Cancelling the attempt (a
timeout, a usage breach, a failing sibling, the caller) cancels the asyncio
task and waits until it has finished: no asyncio work outlives the attempt.
Streaming agents (async generators, ``stream()`` objects) are iterated on
asyncio, one chunk per hop, so chunks arrive live.

This module imports trio-asyncio (and asyncio): it is loaded only by runs
that need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

import trio_asyncio

from ..steps.callables import LATE, SYNC, settle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ..steps.callables import AgentSpec

__all__ = ["call_on_asyncio", "open_run_loop", "stream_on_asyncio"]


def _adopt_patched_loop_lookup() -> None:
    """Point modules that imported asyncio's C ``get_running_loop`` at trio-asyncio's.

    trio-asyncio finds its loop by patching ``asyncio.get_running_loop`` when
    it is imported. A module imported before it that did ``from asyncio import
    get_running_loop`` (anyio's asyncio backend, which pydantic-ai and httpx
    use) keeps the C function, which sees no loop inside a trio-asyncio task
    ("no running event loop"). The patched function falls back to the original
    outside trio, so asyncio programs see no difference.
    """
    import _asyncio

    originals = {
        "get_running_loop": (_asyncio.get_running_loop, asyncio.get_running_loop),
        "_get_running_loop": (_asyncio._get_running_loop, asyncio._get_running_loop),
    }
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if namespace is None or module is asyncio or module is _asyncio:
            continue
        for name, (original, patched) in originals.items():
            if namespace.get(name) is original and original is not patched:
                namespace[name] = patched


def _keep_asyncio_unchanged_outside_trio() -> None:
    """Undo trio-asyncio's loop-creation patches for code that is not in a trio task.

    Importing trio-asyncio makes ``asyncio.new_event_loop()`` (and so
    ``asyncio.run()``, and ``get_event_loop()`` without a running loop) build
    its own *sync* trio loop in every thread. The application around a run
    (an ASGI server, ``asyncio.run`` in tests, ``Flujo.run_asyncio``'s host
    loop) must keep getting real asyncio loops: outside trio tasks these three
    functions go back to asyncio's own; inside trio tasks trio-asyncio's stay.
    """
    from asyncio import events

    from trio_asyncio import _loop

    patched = (
        ("new_event_loop", "_new_loop_new", "_orig_loop_new"),
        ("get_event_loop", "_new_loop_get", "_orig_loop_get"),
        ("set_event_loop", "_new_loop_set", "_orig_loop_set"),
    )
    in_trio = getattr(_loop, "_in_trio_context", None)
    run_get = getattr(_loop, "_new_run_get", None)
    for name, new_name, orig_name in patched:
        new, orig = getattr(_loop, new_name, None), getattr(_loop, orig_name, None)
        if new is None or orig is None or in_trio is None or run_get is None:
            continue  # another trio-asyncio version: leave it as it is
        if getattr(asyncio, name) is not new:
            continue  # already replaced (by us, or by someone else): keep theirs

        def choose(*args: Any, _new: Any = new, _orig: Any = orig, _name: str = name) -> Any:
            if in_trio():
                return _new(*args)
            if _name == "get_event_loop":
                running = run_get()
                if running is not None:
                    return running
            return _orig(*args)

        choose.__name__ = name
        setattr(asyncio, name, choose)
        setattr(events, name, choose)


_adopt_patched_loop_lookup()
_keep_asyncio_unchanged_outside_trio()


@contextlib.asynccontextmanager
async def open_run_loop() -> AsyncIterator[None]:
    """Open an asyncio loop for the run, unless this task already runs inside one.

    A run nested in another run's step (or in the user's own
    ``trio_asyncio.open_loop()``) shares that loop. Cancellation: leaving
    the block closes the loop after the run's tasks have ended.
    """
    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield


async def _call(spec: AgentSpec, data: Any, context: Any, resources: Any) -> Any:
    # Runs as an asyncio task: the agent is called (not only awaited) on
    # asyncio, so code that looks for the running loop before its first
    # await (SDK clients, asyncio.get_running_loop()) finds it.
    value = spec.call(data, context, resources)
    if spec.kind != SYNC:
        value = await value
    if isinstance(value, LATE):
        # A plain def wrapper around an async agent handed back a coroutine: await it here.
        value = await settle(value, _gather)
    return value


async def _gather(iterator: Any) -> Any:
    chunks = [chunk async for chunk in iterator]
    if chunks and all(type(c) is str for c in chunks):
        return "".join(chunks)
    if chunks and all(type(c) is bytes for c in chunks):
        return b"".join(chunks)
    return chunks


async def call_on_asyncio(spec: AgentSpec, data: Any, context: Any, resources: Any) -> Any:
    """Call a non-streaming agent on the run's asyncio loop and return its output.

    Cancellation: cancelling the caller cancels the asyncio task and waits
    until it has finished, then raises ``trio.Cancelled``.
    """
    return await trio_asyncio.aio_as_trio(_call)(spec, data, context, resources)


async def _pump(
    make: Callable[[], Any], on_chunk: Callable[[Any], Awaitable[None]] | None
) -> list[Any]:
    # One asyncio task drives the whole iteration: an agent's generator that
    # enters context managers (pydantic-ai's run_stream sets context variables)
    # must be resumed and closed in the same asyncio context.
    chunks: list[Any] = []
    iterator = make()
    forward = trio_asyncio.trio_as_aio(on_chunk) if on_chunk is not None else None
    try:
        async for chunk in iterator:
            chunks.append(chunk)
            if forward is not None:
                # Wait until the trio side took it: never more than one chunk ahead.
                await forward(chunk)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    return chunks


async def stream_on_asyncio(
    make: Callable[[], Any], on_chunk: Callable[[Any], Awaitable[None]] | None
) -> list[Any]:
    """Iterate a streaming agent on asyncio, forwarding each chunk to ``on_chunk`` live.

    ``make()`` is called on asyncio (it may need the running loop). Returns
    the chunks. Cancellation: cancels the asyncio task, which closes the
    agent's iterator, and waits for it before raising ``trio.Cancelled``.
    """
    chunks: list[Any] = await trio_asyncio.aio_as_trio(_pump)(make, on_chunk)
    return chunks
