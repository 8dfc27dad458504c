"""Supervisor events: what happened to a supervisor's children, in order.

Every event is a frozen attrs value named in the past tense, carrying the
supervisor's name, the child's name and the time on trio's clock. A
supervisor keeps a bounded log of them (``Supervisor.events()``, an
:class:`~.eventlog.EventLog`) and feeds live subscribers
(``Supervisor.subscribe_events()``).
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from .eventlog import EventLog as EventLog

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
