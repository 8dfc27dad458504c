"""The dispatch on a step's kind: one exhaustive ``match`` over :data:`~flujo_actors.steps.kinds.AnyStep`.

Each kind's executor is a small module beside this one; ``assert_never``
makes mypy prove that every kind has one. The executors run steps of any
kind beneath them (branches, bodies, an agent's fallback) through
:func:`flujo_actors.run.core.run_step`, which sits below them and forwards
here: :mod:`flujo_actors.run` installs this function once, when the
package is imported, so no import points up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from ..steps.agent import AgentStep
from ..steps.base import PipelineStep
from ..steps.control import (
    ConditionalStep,
    DynamicParallelRouterStep,
    LoopStep,
    ParallelStep,
)
from ..steps.human import HumanInputStep
from ..steps.map import MapStep
from .agent import run_agent_step
from .human import run_human_step
from .loop import run_loop_step
from .map import run_map_step
from .nested import run_conditional_step, run_pipeline_step
from .parallel import run_parallel_step, run_router_step

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from ..results import StepResult

__all__ = ["run_step"]


async def run_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Execute the frame's step by its kind; never raises for a step failure.

    Cancellation: whatever the kind's executor does (every kind lets
    ``trio.Cancelled`` through).
    """
    step = frame.step
    # The agent step first: by far the most frequent kind.
    match step:
        case AgentStep():
            return await run_agent_step(frame)
        case ParallelStep():
            return await run_parallel_step(frame)
        case LoopStep():
            return await run_loop_step(frame)
        case ConditionalStep():
            return await run_conditional_step(frame)
        case DynamicParallelRouterStep():
            return await run_router_step(frame)
        case PipelineStep():
            return await run_pipeline_step(frame)
        case MapStep():
            return await run_map_step(frame)
        case HumanInputStep():
            return await run_human_step(frame)
        case _:
            assert_never(step)
