"""Running pipelines: the run core and one executor per step kind.

- :mod:`.core`: per-run services (``RunState``), jobs, chains of step actors,
  and :func:`~.core.run_step`, which runs a frame's step of any kind;
- :mod:`.agent`: the agent-step supervisor (attempts, validators, plugins,
  fallback, cache use), over :mod:`.invoke` (one agent call, wherever it
  runs) and :mod:`.isolation` (per-attempt copies and context rollback);
- :mod:`.parallel` (parallel and router branches), :mod:`.loop`, and
  :mod:`.nested` (conditional and nested pipeline) and :mod:`.map`: the control-flow kinds,
  over :mod:`.common`;
- :mod:`.dispatch`: the exhaustive ``match`` on the step's class.

Imports point down that list. The kinds run steps of any kind beneath them
(and an agent's fallback may be any step), so the dispatch is installed in
:mod:`.core` here, once, rather than imported from above.
"""

from . import core, dispatch
from .agent import run_agent_step

__all__: list[str] = []

core.install_dispatch(dispatch.run_step, run_agent_step)
