"""The runner's :class:`~flujo_actors.steps.placement.CallSites`: executors and the asyncio bridge.

Cheap to import: the executors package and the asyncio bridge (trio-asyncio)
load on the first placed or ``event_loop="asyncio"`` call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .steps.agent import AgentStep
    from .steps.callables import AgentSpec

__all__ = ["CALL_SITES", "EdgeCallSites"]


class EdgeCallSites:
    """Placed calls go to :mod:`flujo_actors.executors`, asyncio ones to :mod:`flujo_actors.bridge`."""

    __slots__ = ()

    def executor_for(self, placement: Any) -> Any:
        """:func:`flujo_actors.executors.resolve_executor` (call inside trio)."""
        from .executors import resolve_executor

        return resolve_executor(placement)

    async def submit_step(
        self, executor: Any, step: AgentStep, data: Any, context: Any, resources: Any, attempt: int
    ) -> tuple[Any, Any]:
        """:func:`flujo_actors.executors.submit_step`."""
        from .executors import submit_step

        return await submit_step(executor, step, data, context, resources, attempt)

    async def call_on_asyncio(
        self, spec: AgentSpec, data: Any, context: Any, resources: Any
    ) -> Any:
        """:func:`flujo_actors.bridge.steps.call_on_asyncio`."""
        from .bridge.steps import call_on_asyncio

        return await call_on_asyncio(spec, data, context, resources)

    async def stream_on_asyncio(
        self, make: Callable[[], Any], on_chunk: Callable[[Any], Awaitable[None]] | None
    ) -> list[Any]:
        """:func:`flujo_actors.bridge.steps.stream_on_asyncio`."""
        from .bridge.steps import stream_on_asyncio

        return await stream_on_asyncio(make, on_chunk)


CALL_SITES: Final = EdgeCallSites()
"""The call sites every run of a :class:`~flujo_actors.Flujo` uses."""
