"""flujo_actors: an actor-model pipeline runtime for async Python agents, on trio.

Public API: everything in ``__all__`` below, plus the ``flujo_actors.backends``
and ``flujo_actors.testing`` modules.
"""

from .actors import Actor as Actor
from .actors import ActorRef as ActorRef
from .actors import DeadLetter as DeadLetter
from .actors import DeadLetters as DeadLetters
from .actors import start_actor as start_actor
from .context import PipelineContext as PipelineContext
from .errors import ActorCrashed as ActorCrashed
from .errors import ActorStopped as ActorStopped
from .errors import AskTimeout as AskTimeout
from .errors import ExecutorLost as ExecutorLost
from .errors import FlujoError as FlujoError
from .errors import FlujoInternalError as FlujoInternalError
from .errors import InfiniteFallbackError as InfiniteFallbackError
from .errors import MailboxFull as MailboxFull
from .errors import PipelineDefinitionError as PipelineDefinitionError
from .errors import RestartIntensityExceeded as RestartIntensityExceeded
from .errors import RunNotFoundError as RunNotFoundError
from .errors import SerializationError as SerializationError
from .errors import StateBackendError as StateBackendError
from .errors import StepFailed as StepFailed
from .errors import UsageLimitExceededError as UsageLimitExceededError
from .frames import ExecutionFrame as ExecutionFrame
from .limits import UsageLimits as UsageLimits
from .results import PipelineResult as PipelineResult
from .results import StepResult as StepResult
from .runner import Flujo as Flujo
from .steps.dsl import BranchFailureStrategy as BranchFailureStrategy
from .steps.dsl import ConditionalStep as ConditionalStep
from .steps.dsl import DynamicParallelRouterStep as DynamicParallelRouterStep
from .steps.dsl import LoopStep as LoopStep
from .steps.dsl import MergeStrategy as MergeStrategy
from .steps.dsl import ParallelStep as ParallelStep
from .steps.dsl import Pipeline as Pipeline
from .steps.dsl import PipelineStep as PipelineStep
from .steps.dsl import PluginOutcome as PluginOutcome
from .steps.dsl import Step as Step
from .steps.dsl import StepConfig as StepConfig
from .steps.dsl import step as step

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "ActorStopped",
    "AskTimeout",
    "BranchFailureStrategy",
    "ConditionalStep",
    "DeadLetter",
    "DeadLetters",
    "DynamicParallelRouterStep",
    "ExecutionFrame",
    "ExecutorLost",
    "Flujo",
    "FlujoError",
    "FlujoInternalError",
    "InfiniteFallbackError",
    "LoopStep",
    "MailboxFull",
    "MergeStrategy",
    "ParallelStep",
    "Pipeline",
    "PipelineContext",
    "PipelineDefinitionError",
    "PipelineResult",
    "PipelineStep",
    "PluginOutcome",
    "RestartIntensityExceeded",
    "RunNotFoundError",
    "SerializationError",
    "StateBackendError",
    "Step",
    "StepConfig",
    "StepFailed",
    "StepResult",
    "UsageLimitExceededError",
    "UsageLimits",
    "start_actor",
    "step",
]
