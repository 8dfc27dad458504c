"""What every executor shares: the :class:`Executor` protocol, counters, ``async with``.

The executor modules (``process``, ``ray``) import this, not the package's
``__init__``, so the package and its submodules form no import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs
import trio

from ..steps.placement import require_extra as require_extra

if TYPE_CHECKING:
    from ._work import WorkItem, WorkResult

__all__ = ["Executor", "ExecutorStatistics", "require_extra"]


@runtime_checkable
class Executor(Protocol):
    """Where an agent call runs.

    ``submit`` runs one :class:`WorkItem` and returns its :class:`WorkResult`.
    It must: return the agent's exception as ``WorkResult.error`` (not raise
    it); raise :class:`~flujo_actors.errors.ExecutorLost` when the worker
    running the item dies; never retry by itself; and, when the calling task
    is cancelled, stop the work before re-raising ``trio.Cancelled``.
    ``aclose`` releases the executor's workers (idempotent).
    """

    async def submit(self, item: WorkItem) -> WorkResult:
        """Run ``item`` and return its result (see the class docstring)."""
        ...

    async def aclose(self) -> None:
        """Release workers and connections; safe to call twice."""
        ...


@attrs.frozen
class ExecutorStatistics:
    """Counters of one executor instance since it was created.

    Attributes:
        submitted: items submitted.
        running: items submitted and not finished.
        completed: items that returned a result (the agent may have failed).
        cancelled: items whose caller was cancelled (the work was stopped).
        lost: items whose worker died (:class:`~flujo_actors.errors.ExecutorLost`).
    """

    submitted: int
    running: int
    completed: int
    cancelled: int
    lost: int


class _Counters:
    """Mutable counters behind ``statistics()`` (cheap; no locking needed in trio)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.cancelled = 0
        self.lost = 0

    def snapshot(self) -> ExecutorStatistics:
        running = self.submitted - self.completed - self.cancelled - self.lost
        return ExecutorStatistics(
            self.submitted, max(running, 0), self.completed, self.cancelled, self.lost
        )


class _ExecutorBase(trio.abc.AsyncResource):
    """What every executor shares: counters, ``statistics()`` and ``async with``."""

    _counters: _Counters

    async def aclose(self) -> None:
        """Release what the executor holds (overridden where there is something)."""

    def statistics(self) -> ExecutorStatistics:
        """Counters since creation."""
        return self._counters.snapshot()
