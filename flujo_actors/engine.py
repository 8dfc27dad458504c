"""Old import path of the run core, kept for code that imports from it.

The engine now lives in :mod:`flujo_actors.run` (the run core in
:mod:`flujo_actors.run.core`, one module per step kind beside it); these are
the same objects.
"""

from .run.core import Chain as Chain
from .run.core import Job as Job
from .run.core import RunState as RunState
from .run.core import StepActor as StepActor
from .run.core import run_pipeline as run_pipeline
from .run.core import run_step as run_step

__all__ = ["Chain", "Job", "RunState", "StepActor", "run_pipeline", "run_step"]
