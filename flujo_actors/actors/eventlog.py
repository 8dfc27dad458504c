"""A bounded log with live subscribers: what dead letters and supervisor events are kept in.

:class:`EventLog` keeps the newest ``capacity`` entries and hands every new
one to each subscriber's memory channel without ever blocking the actor or
supervisor that produced it: an entry pushed out of the full log, or one a
subscriber could not take, is counted in ``dropped``.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import trio

__all__ = ["EventLog"]

EventT = TypeVar("EventT")


class EventLog(Generic[EventT]):
    """A bounded log of entries plus live subscribers; ``emit`` never blocks.

    ``dropped`` counts entries lost somewhere: pushed out of the full log
    (the oldest goes), or not taken by a subscriber that did not keep up.

    Raises:
        ValueError: ``capacity`` < 1 (named after ``owner``).
    """

    __slots__ = ("_log", "_subscribers", "dropped")

    def __init__(self, capacity: int, *, owner: str = "EventLog") -> None:
        if capacity < 1:
            raise ValueError(f"{owner}: capacity must be >= 1, got {capacity!r}.")
        self._log: collections.deque[EventT] = collections.deque(maxlen=capacity)
        self._subscribers: list[trio.MemorySendChannel[EventT]] = []
        self.dropped = 0

    def emit(self, event: EventT) -> None:
        """Append ``event`` and hand it to every subscriber (never blocks)."""
        log = self._log
        if len(log) == log.maxlen:
            self.dropped += 1
        log.append(event)
        if self._subscribers:
            for send in tuple(self._subscribers):
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    self.dropped += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._subscribers.remove(send)

    def snapshot(self) -> list[EventT]:
        """The entries currently kept, oldest first."""
        return list(self._log)

    def __len__(self) -> int:
        return len(self._log)

    def subscribe(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[EventT]:
        """A channel receiving every entry emitted from now on; close it to unsubscribe."""
        send, receive = trio.open_memory_channel[EventT](buffer)
        self._subscribers.append(send)
        return receive
