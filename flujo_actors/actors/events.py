"""Supervisor events: what happened to a supervisor's children, in order.

Every event is a frozen attrs value named in the past tense, carrying the
supervisor's name, the child's name and the time on trio's clock. A
supervisor keeps a bounded log of them (``Supervisor.events()``) and feeds
live subscribers (``Supervisor.subscribe_events()``).
"""

from __future__ import annotations

import collections
from typing import Any, Final, Generic, TypeVar

import attrs
import trio

__all__ = [
    "ChildCrashed",
    "ChildRestarted",
    "ChildStarted",
    "ChildStopped",
    "DeadLettered",
    "EventLog",
    "SupervisorEvent",
]

DEFAULT_EVENT_CAPACITY: Final = 10_000


@attrs.frozen(kw_only=True)
class ChildStarted:
    """A child was started for the first time (at supervisor start or by ``start_child``)."""

    supervisor: str
    child: str
    time: float


@attrs.frozen(kw_only=True)
class ChildCrashed:
    """A child's ``on_start`` or ``handle`` raised; ``error`` is ``"Type: message"``."""

    supervisor: str
    child: str
    time: float
    error: str


@attrs.frozen(kw_only=True)
class ChildRestarted:
    """A child was restarted (its ``on_start`` ran again on the same mailbox).

    Attributes:
        restarts: how many times this child has been restarted so far.
        delay_s: the backoff waited before this restart (0.0 without backoff).
        error: the crash that caused it, or None after a normal exit (or when
            the child was restarted because a sibling crashed).
    """

    supervisor: str
    child: str
    time: float
    restarts: int
    delay_s: float
    error: str | None


@attrs.frozen(kw_only=True)
class ChildStopped:
    """A child stopped for good.

    ``reason`` is one of ``"normal"`` (it stopped itself or its ref was
    stopped, and its restart type does not restart it), ``"crashed"`` (not
    restarted after a crash), ``"stop_child"``, ``"shutdown"`` (the
    supervisor stopped), ``"intensity"`` (the supervisor gave up) or
    ``"cancelled"`` (the supervisor was cancelled).
    """

    supervisor: str
    child: str
    time: float
    reason: str
    error: str | None = None


@attrs.frozen(kw_only=True)
class DeadLettered:
    """A message for (or a late reply from) a child went to dead letters."""

    supervisor: str
    child: str
    time: float
    reason: str
    message: Any


SupervisorEvent = ChildStarted | ChildCrashed | ChildRestarted | ChildStopped | DeadLettered

EventT = TypeVar("EventT")


class EventLog(Generic[EventT]):
    """A bounded log of events plus live subscribers; ``emit`` never blocks.

    A subscriber that does not keep up loses events (counted in ``dropped``);
    it never slows down the supervisor that emits them.
    """

    __slots__ = ("_log", "_subscribers", "dropped")

    def __init__(self, capacity: int = DEFAULT_EVENT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"EventLog: capacity must be >= 1, got {capacity!r}.")
        self._log: collections.deque[EventT] = collections.deque(maxlen=capacity)
        self._subscribers: list[trio.MemorySendChannel[EventT]] = []
        self.dropped = 0

    def emit(self, event: EventT) -> None:
        """Append ``event`` and hand it to every subscriber (never blocks)."""
        self._log.append(event)
        if self._subscribers:
            for send in tuple(self._subscribers):
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    self.dropped += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._subscribers.remove(send)

    def snapshot(self) -> list[EventT]:
        """The events currently kept, oldest first."""
        return list(self._log)

    def subscribe(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[EventT]:
        """A channel receiving every event emitted from now on; close it to unsubscribe."""
        send, receive = trio.open_memory_channel[EventT](buffer)
        self._subscribers.append(send)
        return receive
