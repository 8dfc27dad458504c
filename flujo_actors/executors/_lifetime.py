"""A resource opened lazily inside a trio run and closed by the end of that run.

Executors hold things that must not outlive their user: worker processes, a
Ray connection. :class:`RunBound` opens such a resource on first use and
closes it when ``aclose()`` is called or, at the latest, when the trio run
that opened it ends (a trio *system task* owns it; system tasks are
cancelled after the main task returns, so the close runs inside that run).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["RunBound"]

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
