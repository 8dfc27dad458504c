"""Where agent calls run: inline (default), a process pool, or a Ray cluster.

The step actor, its supervisor, the governor and every trio object stay in
this process; only the agent call moves. A step actor builds a
:class:`WorkItem` for each attempt and awaits ``executor.submit(item)``,
which returns a :class:`WorkResult`: the output and its usage, the context
fields the agent changed (written back onto the live context by the step
actor), or the agent's error as data (re-raised here with its own type when
that type is importable). The step's supervisor is the only retry policy:
executors never retry on their own, and a lost worker surfaces as
:class:`~flujo_actors.errors.ExecutorLost`, which the supervisor retries
like any other failed attempt.

Choose an executor per run (``Flujo(executor=...)``) or per step
(``placement=``): ``"inline"``, ``"process"``, ``"ray"`` or an executor
instance. ``"process"`` is one process-wide pool
(:meth:`ProcessExecutor.shared`) that stays warm across trio runs until the
interpreter exits; ``"ray"`` is one executor per trio run, opened on first
use and closed when that run ends. An instance you create is yours: it opens
lazily too, and closes on ``aclose()`` / leaving ``async with``, or at the
latest when the interpreter exits (``ProcessExecutor``) or when the trio run
that opened it ends (``RayExecutor``).

Importing this package imports neither trio-parallel, nor cloudpickle, nor ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import trio

from ..policy.usage import usage_of
from ..steps.placement import PLACEMENTS
from ..steps.placement import check_placement as check_placement
from ._work import (
    ErrorInfo,
    RemoteAgentError,
    WorkItem,
    WorkResult,
    arun_work_item,
    build_work_item,
)
from .base import Executor as Executor
from .base import ExecutorStatistics as ExecutorStatistics
from .base import _Counters, _ExecutorBase
from .base import require_extra as require_extra

if TYPE_CHECKING:
    from ..steps.agent import AgentStep

__all__ = [
    "ErrorInfo",
    "Executor",
    "ExecutorStatistics",
    "InlineExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "RemoteAgentError",
    "WorkItem",
    "WorkResult",
    "check_placement",
    "resolve_executor",
    "submit_step",
]


class InlineExecutor(_ExecutorBase):
    """Runs the agent in the calling task, through the same contract as remote executors.

    The agent works on a copy of the context; the fields it changed come back
    in :attr:`WorkResult.context_updates`. A cancelled caller cancels the
    agent directly. ``placement="inline"`` (the default) skips this object
    entirely and calls the agent on the live context; an ``InlineExecutor``
    instance is the reference implementation of :class:`Executor` and a way
    to test placement-independent behaviour without extras.
    """

    def __init__(self) -> None:
        self._counters = _Counters()

    async def submit(self, item: WorkItem) -> WorkResult:
        """Run ``item`` here; the agent's exception comes back as data.

        Cancellation propagates into the agent and out of this call.
        """
        c = self._counters
        c.submitted += 1
        try:
            result = await arun_work_item(item)
        except trio.Cancelled:
            c.cancelled += 1
            raise
        c.completed += 1
        return result

    async def aclose(self) -> None:
        """Nothing to release."""


def __getattr__(name: str) -> Any:
    # ProcessExecutor / RayExecutor live in modules that are cheap to import
    # (they import their extras lazily), but keep `import flujo_actors` lean.
    if name == "ProcessExecutor":
        from .process import ProcessExecutor

        return ProcessExecutor
    if name == "RayExecutor":
        from .ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SHARED: Final[trio.lowlevel.RunVar[dict[str, Any]]] = trio.lowlevel.RunVar(
    "flujo_actors_executors"
)


def _make(placement: str) -> Any:
    if placement == "inline":
        return InlineExecutor()
    if placement == "process":
        from .process import ProcessExecutor

        return ProcessExecutor.shared()  # process-wide: warm across trio runs
    if placement == "ray":
        from .ray import RayExecutor

        return RayExecutor()
    raise ValueError(f"placement must be one of {PLACEMENTS!r} or an executor, got {placement!r}.")


def resolve_executor(placement: Any) -> Executor:
    """The executor for a placement (call inside trio).

    A string gives this trio run's shared executor of that kind (created on
    first use; ``"process"`` is the process-wide :meth:`ProcessExecutor.shared`,
    the others close when the run ends); an executor instance is returned as is.

    Raises:
        ValueError: an unknown string or an object that is not an executor.
        ImportError: the extra the placement needs is not installed.
    """
    if isinstance(placement, str):
        try:
            shared = _SHARED.get()
        except LookupError:
            shared = {}
            _SHARED.set(shared)
        executor = shared.get(placement)
        if executor is None:
            executor = shared[placement] = _make(placement)
        return executor  # type: ignore[no-any-return]
    if not callable(getattr(placement, "submit", None)):
        raise ValueError(
            f"placement must be one of {PLACEMENTS!r} or an executor (an object with "
            f"async submit(item)), got {placement!r}."
        )
    return placement  # type: ignore[no-any-return]


async def submit_step(
    executor: Executor, step: AgentStep, data: Any, context: Any, resources: Any, attempt: int
) -> tuple[Any, Any]:
    """Run one attempt of ``step`` on ``executor``; the step actor's side of the boundary.

    Builds the :class:`WorkItem`, awaits the result, writes the changed
    context fields onto ``context`` and returns the output and its usage
    reading: the worker's (the same :func:`~flujo_actors.policy.usage.usage_of`
    rule), or, when the worker found none, this process's reading of the
    output (so extractors registered only here apply to placed steps too).

    Raises:
        Exception: the agent's error, rebuilt with its own type when importable
            (else :class:`RemoteAgentError`), with the remote traceback as a note;
            :class:`~flujo_actors.errors.ExecutorLost` when the worker died;
            :class:`~flujo_actors.errors.SerializationError` when the item or
            its result cannot be pickled.
        trio.Cancelled: the caller was cancelled; the remote work was stopped.
    """
    item = build_work_item(step, data, context, resources, attempt)
    result = await executor.submit(item)
    error = result.error
    if error is not None:
        raise error.to_exception()
    updates = result.context_updates
    if updates and context is not None:
        setter = object.__setattr__
        for name, value in updates.items():
            setter(context, name, value)
    output = result.output
    reading = result.usage
    if reading is None:
        reading = usage_of(output, step_name=step.name)
    return output, reading


# Keep the names visible to type checkers without importing the extras' modules.
if TYPE_CHECKING:
    from .process import ProcessExecutor as ProcessExecutor
    from .ray import RayExecutor as RayExecutor
