"""Lifetimes of what executors hold: worker processes, a Ray connection.

Two kinds, both opened lazily on first use:

- :class:`RunBound` (the Ray connection): closed when ``aclose()`` is called
  or, at the latest, when the trio run that opened it ends (a trio *system
  task* owns it; system tasks are cancelled after the main task returns, so
  the close runs inside that run).
- :class:`UntilClosed` (the process pool): not tied to a trio run, so it stays
  warm across ``runner.run`` calls; closed when ``aclose()`` / ``close()`` is
  called or, at the latest, when the interpreter exits (an ``atexit`` hook).
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["RunBound", "UntilClosed", "close_at_exit"]

T = TypeVar("T")

_log = logging.getLogger("flujo_actors.executors")


class RunBound(Generic[T]):
    """Open ``open_()`` lazily in the current trio run; ``close(value)`` at most once.

    Args:
        name: what the resource is, for messages ("ProcessExecutor's worker pool").
        open_: opens the resource (awaited in the task that first needs it).
        close: closes it (awaited in a shielded scope: it always completes).
    """

    def __init__(
        self,
        name: str,
        open_: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
    ) -> None:
        self.name = name
        self._open = open_
        self._close = close
        self._value: T | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._opening: trio.Event | None = None
        self._owner: trio.CancelScope | None = None
        self._closed: trio.Event | None = None

    @property
    def is_open(self) -> bool:
        """Whether the resource is open (in some trio run)."""
        return self._value is not None

    async def get(self) -> T:
        """The open resource, opening it first if needed.

        Cancelling a caller that waits for another task's open does not
        cancel the open itself.

        Raises:
            RuntimeError: the resource is open in another, still running trio run.
        """
        token = trio.lowlevel.current_trio_token()
        while True:
            value = self._value
            if value is not None and self._token is token:
                return value
            if value is not None:
                raise RuntimeError(
                    f"{self.name} is open in another trio run; an executor serves one trio "
                    "run at a time. Create one executor per trio run (or per thread)."
                )
            if self._opening is None:
                break
            await self._opening.wait()
        self._opening = opening = trio.Event()
        try:
            value = await self._open()
            self._value, self._token = value, token
            self._closed = trio.Event()
            self._owner = trio.CancelScope()
            trio.lowlevel.spawn_system_task(self._own, value, self._owner, self._closed)
        finally:
            self._opening = None
            opening.set()
        return value

    async def _own(self, value: T, owner: trio.CancelScope, closed: trio.Event) -> None:
        try:
            with owner:
                await trio.sleep_forever()
        finally:
            # Shielded: the close must complete even though the run is ending.
            with trio.CancelScope(shield=True):
                self._value = None
                self._token = None
                try:
                    await self._close(value)
                except Exception:
                    # A system task must not raise (it would crash the whole run);
                    # the close failing is worth a log line, not a crash.
                    _log.exception("closing %s failed", self.name)
                closed.set()

    async def aclose(self) -> None:
        """Close the resource now if it is open in this run (idempotent).

        Waits for the close to finish; cancelling the caller does not stop the
        close, which completes in its owner task.
        """
        owner, closed = self._owner, self._closed
        if owner is None or closed is None or self._token is None:
            return
        if self._token is not trio.lowlevel.current_trio_token():
            return
        owner.cancel()
        await closed.wait()


class UntilClosed(Generic[T]):
    """Open ``open_()`` lazily (from any thread or trio run); ``close(value)`` at most once.

    For resources that should stay warm across trio runs (worker processes):
    the value lives until :meth:`aclose` / :meth:`close`, or until
    :func:`close_at_exit` closes it when the interpreter exits. ``open_`` and
    ``close`` are blocking callables; ``close`` must be safe to run in a worker
    thread. Thread-safe.

    Args:
        name: what the resource is, for messages ("ProcessExecutor's worker pool").
        open_: opens the resource (called in the task or thread that first needs it).
        close: closes it (blocking; may wait for work in flight to finish).
    """

    def __init__(self, name: str, open_: Callable[[], T], close: Callable[[T], None]) -> None:
        self.name = name
        self._open = open_
        self._close = close
        self._value: T | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether the resource is open."""
        return self._value is not None

    def get(self) -> T:
        """The open resource, opening it first if needed (the caller blocks while it opens)."""
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                self._value = self._open()
                with _OPEN_LOCK:
                    _OPEN.add(self)
                _register_exit_hook()
            return self._value

    def _detach(self) -> T | None:
        with self._lock:
            value, self._value = self._value, None
        with _OPEN_LOCK:
            _OPEN.discard(self)
        return value

    def close(self) -> None:
        """Close the resource now, blocking until it is closed (idempotent).

        The next :meth:`get` opens a fresh one.
        """
        value = self._detach()
        if value is not None:
            try:
                self._close(value)
            except Exception:
                _log.exception("closing %s failed", self.name)

    async def aclose(self) -> None:
        """Close the resource now without blocking trio (idempotent).

        The close runs in a worker thread and cannot be cancelled: a cancelled
        caller still waits for it to finish.
        """
        if self._value is not None:
            # Shielded: under an already-cancelled scope, to_thread.run_sync would raise
            # before starting the close, leaving the workers running.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.close)


# Every UntilClosed that is open, closed at interpreter exit (strong references:
# an open resource is released by close(), not by being forgotten).
_OPEN: set[UntilClosed[Any]] = set()
_OPEN_LOCK = threading.Lock()
_HOOKED = False


def _register_exit_hook() -> None:
    # Registered when the first resource opens, so after the modules it needs (for
    # worker pools: multiprocessing, whose own exit hook SIGTERMs daemonic children):
    # atexit runs hooks last-in first-out, so ours closes the workers cleanly first.
    global _HOOKED
    with _OPEN_LOCK:
        if _HOOKED:
            return
        _HOOKED = True
    atexit.register(close_at_exit)


def close_at_exit() -> None:
    """Close every open :class:`UntilClosed` (the interpreter-exit hook; also callable)."""
    with _OPEN_LOCK:
        open_now = list(_OPEN)
    for resource in open_now:
        resource.close()
