"""Runs from asyncio applications: trio in guest mode on the host's asyncio loop.

``Flujo.run_asyncio`` and ``Flujo.stream_asyncio`` execute the run on trio,
in *guest mode* (``trio.lowlevel.start_guest_run``): trio's scheduler runs
as callbacks of the host's asyncio loop, in the host's thread (no thread of
ours; trio's I/O wait happens in trio's helper thread). A thread can host one
trio run at a time, so every run started from one asyncio loop shares one
guest run (:class:`_TrioHost`): it starts with the first run and ends when the
last one finishes, so nothing of trio is left behind when the application's
loop closes.

Cancelling the asyncio task that awaits a run cancels the run (its trio
cancel scope) and waits until the run has unwound before ``CancelledError``
propagates: no step of a cancelled run is left running.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import FlujoInternalError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

__all__ = ["run_on_trio", "stream_on_trio"]


class _Job:
    """One call running on the guest trio run, seen from both sides."""

    __slots__ = ("cancel_requested", "done", "scope")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[Any] = loop.create_future()
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def cancel(self) -> None:
        """Cancel the job (trio side; called through the trio token)."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


class _TrioHost:
    """The guest trio run shared by every run started from one asyncio loop.

    All state changes happen in the loop's thread (trio's guest ticks run
    there too), so no lock is needed: ``active`` counts jobs submitted and
    not finished; when it drops to zero the guest run ends, and the next
    submission starts a new one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.active = 0
        self.state = "idle"  # -> "running" -> "stopping" -> "idle"
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.ready: asyncio.Future[None] | None = None
        self.stopped: asyncio.Future[None] | None = None
        self.idle: trio.CancelScope | None = None

    async def submit(self, job: _Job, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task of the guest run; ``job.done`` gets its outcome."""
        while self.state == "stopping":
            assert self.stopped is not None
            await asyncio.shield(self.stopped)
        self.active += 1
        if self.state == "idle":
            self._start()
        assert self.ready is not None
        if not self.ready.done():
            try:
                await asyncio.shield(self.ready)
            except BaseException:
                self._finished()  # never started: do not keep the guest run alive
                raise
        assert self.token is not None
        self.token.run_sync_soon(self._spawn, job, fn, args)

    def _start(self) -> None:
        loop = self.loop
        self.state = "running"
        self.ready = loop.create_future()
        self.stopped = loop.create_future()
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=self._done,
            host_uses_signal_set_wakeup_fd=True,
        )

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.idle = trio.CancelScope()
            assert self.ready is not None
            self.ready.set_result(None)
            with self.idle:
                await trio.sleep_forever()

    def _done(self, result: Any) -> None:
        # The guest run ended (its last job finished). It never raises on its
        # own; if it did (a bug), fail every job still waiting rather than hang.
        self.state = "idle"
        self.token = self.nursery = self.idle = None
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(FlujoInternalError(f"the trio guest run ended: {result!r}"))
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    def _spawn(self, job: _Job, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self._run_job, job, fn, args)

    async def _run_job(
        self, job: _Job, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        scope = job.scope = trio.CancelScope()
        if job.cancel_requested:
            scope.cancel()
        done = job.done
        try:
            with scope:
                value = await fn(*args)
            if done.done():
                pass
            elif scope.cancelled_caught:
                done.cancel()
            else:
                done.set_result(value)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        finally:
            if not done.done():  # a BaseException (KeyboardInterrupt): still wake the caller
                done.set_exception(FlujoInternalError("the run ended without a result"))
            self._finished()

    def _finished(self) -> None:
        self.active -= 1
        if self.active == 0 and self.state == "running":
            self.state = "stopping"
            if self.idle is not None:
                self.idle.cancel()

    async def wait_stopped(self) -> None:
        """If the guest run is ending (no job left), wait until it has ended.

        The last caller waits a few ticks so that nothing of trio outlives the
        runs: an application may close its loop as soon as its last run returned.
        """
        while self.state == "stopping":
            assert self.stopped is not None
            try:
                await asyncio.shield(self.stopped)
            except asyncio.CancelledError:
                continue

    def cancel(self, job: _Job) -> None:
        """Ask the guest run to cancel ``job`` (from the asyncio side)."""
        if self.token is not None:
            self.token.run_sync_soon(job.cancel)
        else:
            job.cancel_requested = True


_HOSTS: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TrioHost]] = (
    weakref.WeakKeyDictionary()
)


def _host() -> _TrioHost:
    loop = asyncio.get_running_loop()
    host = _HOSTS.get(loop)
    if host is None:
        host = _HOSTS[loop] = _TrioHost(loop)
    return host


async def _wait_unwound(host: _TrioHost, job: _Job) -> None:
    """Cancel ``job`` and wait until it has ended, even if cancelled again meanwhile."""
    host.cancel(job)
    while not job.done.done():
        try:
            await asyncio.wait({job.done})
        except asyncio.CancelledError:
            continue


async def run_on_trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Await the trio function ``fn(*args)`` from asyncio (trio in guest mode on this loop).

    Returns its value or raises its exception. Cancellation: cancelling the
    awaiting asyncio task cancels ``fn``'s trio cancel scope, waits until it
    has unwound, then raises ``asyncio.CancelledError``.
    """
    host = _host()
    job = _Job(host.loop)
    await host.submit(job, fn, *args)
    try:
        try:
            return await asyncio.shield(job.done)
        except asyncio.CancelledError:
            if job.done.done() and not job.done.cancelled():
                raise  # the run itself was not cancelled: propagate as is
            await _wait_unwound(host, job)
            raise
    finally:
        await host.wait_stopped()


_END: Final = object()


async def _pump(
    agen_fn: Callable[..., AsyncGenerator[Any, None]],
    args: tuple[Any, ...],
    requests: trio.MemoryReceiveChannel[asyncio.Future[Any]],
) -> None:
    # Trio side of a stream: one item per request, so the producer is never
    # more than one item ahead of the asyncio consumer.
    items = agen_fn(*args)
    try:
        async for want in requests:
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                if not want.done():
                    want.set_result(_END)
                return
            except Exception as exc:
                if not want.done():
                    want.set_exception(exc)
                return
            if not want.done():
                want.set_result(item)
    finally:
        with trio.CancelScope(shield=True):
            await items.aclose()
        requests.close()
        _drop_requests(requests)


def _drop_requests(requests: trio.MemoryReceiveChannel[asyncio.Future[Any]]) -> None:
    # Requests that will never be served: wake their consumer (as cancelled).
    while True:
        try:
            requests.receive_nowait().cancel()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return


def _request(send: trio.MemorySendChannel[asyncio.Future[Any]], want: asyncio.Future[Any]) -> None:
    # Trio side (through the token): queue a request, or cancel it if the pump ended.
    try:
        send.send_nowait(want)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        want.cancel()


async def stream_on_trio(
    agen_fn: Callable[..., AsyncGenerator[Any, None]], *args: Any
) -> AsyncGenerator[Any, None]:
    """Iterate the trio async generator ``agen_fn(*args)`` from asyncio.

    Items are pulled one at a time. Leaving the loop early (``break`` inside
    ``contextlib.aclosing``), closing the iterator or cancelling the consumer
    cancels the trio side and waits until it has unwound.
    """
    host = _host()
    job = _Job(host.loop)
    send, receive = trio.open_memory_channel[asyncio.Future[Any]](float("inf"))
    await host.submit(job, _pump, agen_fn, args, receive)
    finished = False
    try:
        while True:
            want = host.loop.create_future()
            token = host.token
            if token is None or job.done.done():
                break  # the trio side ended (it raised into its last request)
            token.run_sync_soon(_request, send, want)
            item = await want
            if item is _END:
                break
            yield item
        finished = True
    finally:
        if finished:
            # Ended by itself: let the trio side finish (closes its generator).
            token = host.token
            if token is not None and not job.done.done():
                token.run_sync_soon(send.close)
            while not job.done.done():
                try:
                    await asyncio.wait({job.done})
                except asyncio.CancelledError:
                    await _wait_unwound(host, job)
                    raise
        else:
            await _wait_unwound(host, job)
        if job.done.done() and not job.done.cancelled():
            job.done.exception()  # retrieved: its exception was already raised to the consumer
        await host.wait_stopped()
