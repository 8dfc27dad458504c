"""Running pipelines: the run core and one executor per step kind.

- :mod:`.core`: per-run services (``RunState``), jobs, chains of step actors,
  and :func:`~.core.run_step`, the dispatch on a step's kind;
- :mod:`.agent`: the agent-step supervisor (attempts, validators, plugins,
  fallback, cache use), over :mod:`.invoke` (one agent call, wherever it
  runs) and :mod:`.isolation` (per-attempt copies and context rollback);
- :mod:`.parallel` (parallel and router branches), :mod:`.loop`, and
  :mod:`.nested` (conditional and nested pipeline) and :mod:`.map`: the control-flow kinds,
  over :mod:`.common`.

Imports point down that list. The kinds run steps of any kind beneath them
(and an agent's fallback may be any step), so the dispatch table in
:mod:`.core` is filled here, once, rather than by an import pointing up.
"""

from .agent import run_agent_step
from .core import KIND_RUNNERS
from .human import run_human_step
from .loop import run_loop_step
from .map import run_map_step
from .nested import run_conditional_step, run_pipeline_step
from .parallel import run_parallel_step, run_router_step

__all__: list[str] = []

KIND_RUNNERS.update(
    {
        "agent": run_agent_step,
        "parallel": run_parallel_step,
        "loop": run_loop_step,
        "conditional": run_conditional_step,
        "router": run_router_step,
        "pipeline": run_pipeline_step,
        "map": run_map_step,
        "human": run_human_step,
    }
)
