"""flujo_actors: an actor-model pipeline runtime for async Python agents, on trio.

Public API: everything in ``__all__`` below, plus the ``flujo_actors.backends``
and ``flujo_actors.testing`` modules.

Every public name loads on first use (PEP 562): ``import flujo_actors`` imports
no submodule (not even trio), ``from flujo_actors import Flujo, Step`` loads the
pipeline core, and serialization (cattrs), the backends and the executors load
when one of their names is first used.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actors import Actor as Actor
    from .actors import ActorDown as ActorDown
    from .actors import ActorExit as ActorExit
    from .actors import ActorRef as ActorRef
    from .actors import ActorStatistics as ActorStatistics
    from .actors import Backoff as Backoff
    from .actors import ChildCounts as ChildCounts
    from .actors import ChildCrashed as ChildCrashed
    from .actors import ChildInfo as ChildInfo
    from .actors import ChildRestarted as ChildRestarted
    from .actors import ChildSpec as ChildSpec
    from .actors import ChildStarted as ChildStarted
    from .actors import ChildStopped as ChildStopped
    from .actors import DeadLetter as DeadLetter
    from .actors import DeadLettered as DeadLettered
    from .actors import DeadLetters as DeadLetters
    from .actors import DynamicSupervisor as DynamicSupervisor
    from .actors import Monitor as Monitor
    from .actors import Restart as Restart
    from .actors import RestartRecord as RestartRecord
    from .actors import Strategy as Strategy
    from .actors import Supervisor as Supervisor
    from .actors import SupervisorEvent as SupervisorEvent
    from .actors import SupervisorStatistics as SupervisorStatistics
    from .actors import open_actor as open_actor
    from .actors import open_dynamic_supervisor as open_dynamic_supervisor
    from .actors import open_supervisor as open_supervisor
    from .actors import start_actor as start_actor
    from .backends.cache import CacheBackend as CacheBackend
    from .backends.cache import InMemoryLRUBackend as InMemoryLRUBackend
    from .backends.postgres import PostgresBackend as PostgresBackend
    from .backends.sqlite import SQLiteBackend as SQLiteBackend
    from .backends.state import InMemoryStateBackend as InMemoryStateBackend
    from .backends.state import StateBackend as StateBackend
    from .context import PipelineContext as PipelineContext
    from .errors import ActorCrashed as ActorCrashed
    from .errors import ActorStopped as ActorStopped
    from .errors import AskTimeout as AskTimeout
    from .errors import AsyncioInTrioError as AsyncioInTrioError
    from .errors import CacheSkippedWarning as CacheSkippedWarning
    from .errors import ExecutorLost as ExecutorLost
    from .errors import FlujoError as FlujoError
    from .errors import FlujoInternalError as FlujoInternalError
    from .errors import HookError as HookError
    from .errors import HumanInputError as HumanInputError
    from .errors import InfiniteFallbackError as InfiniteFallbackError
    from .errors import MailboxFull as MailboxFull
    from .errors import MaxChildrenExceeded as MaxChildrenExceeded
    from .errors import PipelineDefinitionError as PipelineDefinitionError
    from .errors import PricingNotConfiguredError as PricingNotConfiguredError
    from .errors import RestartIntensityExceeded as RestartIntensityExceeded
    from .errors import RunExistsError as RunExistsError
    from .errors import RunNotFoundError as RunNotFoundError
    from .errors import SerializationError as SerializationError
    from .errors import StateBackendError as StateBackendError
    from .errors import StepFailed as StepFailed
    from .errors import UsageLimitExceededError as UsageLimitExceededError
    from .errors import UsageReportError as UsageReportError
    from .executors import Executor as Executor
    from .executors import InlineExecutor as InlineExecutor
    from .executors import ProcessExecutor as ProcessExecutor
    from .executors import RayExecutor as RayExecutor
    from .executors import WorkItem as WorkItem
    from .executors import WorkResult as WorkResult
    from .frames import ExecutionFrame as ExecutionFrame
    from .introspection import ActorSnapshot as ActorSnapshot
    from .introspection import MapItems as MapItems
    from .introspection import RuntimeSnapshot as RuntimeSnapshot
    from .limits import UsageLimits as UsageLimits
    from .policy.usage import register_usage_extractor as register_usage_extractor
    from .policy.usage import usage_of as usage_of
    from .results import MapItemDone as MapItemDone
    from .results import PausedRun as PausedRun
    from .results import PendingInput as PendingInput
    from .results import PipelineResult as PipelineResult
    from .results import StepResult as StepResult
    from .results import StreamRetried as StreamRetried
    from .results import Usage as Usage
    from .runner import Flujo as Flujo
    from .serialization import dump_typed as dump_typed
    from .serialization import load_typed as load_typed
    from .serialization import register_custom_deserializer as register_custom_deserializer
    from .serialization import register_custom_serializer as register_custom_serializer
    from .serialization import safe_deserialize as safe_deserialize
    from .serialization import safe_serialize as safe_serialize
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
    from .steps.dsl import StepBase as StepBase
    from .steps.dsl import StepConfig as StepConfig
    from .steps.dsl import step as step
    from .steps.human import HumanInputStep as HumanInputStep
    from .steps.kinds import AnyStep as AnyStep
    from .steps.map import MapStep as MapStep
    from .tracing import Span as Span

# name -> module, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "Actor": ".actors",
    "ActorCrashed": ".errors",
    "ActorDown": ".actors",
    "ActorExit": ".actors",
    "ActorRef": ".actors",
    "ActorSnapshot": ".introspection",
    "ActorStatistics": ".actors",
    "ActorStopped": ".errors",
    "AskTimeout": ".errors",
    "AsyncioInTrioError": ".errors",
    "Backoff": ".actors",
    "AnyStep": ".steps.kinds",
    "BranchFailureStrategy": ".steps.dsl",
    "CacheBackend": ".backends.cache",
    "CacheSkippedWarning": ".errors",
    "ChildCounts": ".actors",
    "ChildCrashed": ".actors",
    "ChildInfo": ".actors",
    "ChildRestarted": ".actors",
    "ChildSpec": ".actors",
    "ChildStarted": ".actors",
    "ChildStopped": ".actors",
    "ConditionalStep": ".steps.dsl",
    "DeadLetter": ".actors",
    "DeadLettered": ".actors",
    "DeadLetters": ".actors",
    "DynamicParallelRouterStep": ".steps.dsl",
    "DynamicSupervisor": ".actors",
    "ExecutionFrame": ".frames",
    "Executor": ".executors",
    "ExecutorLost": ".errors",
    "Flujo": ".runner",
    "FlujoError": ".errors",
    "FlujoInternalError": ".errors",
    "HookError": ".errors",
    "HumanInputError": ".errors",
    "HumanInputStep": ".steps.human",
    "InMemoryLRUBackend": ".backends.cache",
    "InMemoryStateBackend": ".backends.state",
    "InfiniteFallbackError": ".errors",
    "InlineExecutor": ".executors",
    "LoopStep": ".steps.dsl",
    "MailboxFull": ".errors",
    "MapItemDone": ".results",
    "MapItems": ".introspection",
    "MapStep": ".steps.map",
    "MaxChildrenExceeded": ".errors",
    "MergeStrategy": ".steps.dsl",
    "Monitor": ".actors",
    "ParallelStep": ".steps.dsl",
    "PausedRun": ".results",
    "PendingInput": ".results",
    "Pipeline": ".steps.dsl",
    "PipelineContext": ".context",
    "PipelineDefinitionError": ".errors",
    "PipelineResult": ".results",
    "PipelineStep": ".steps.dsl",
    "PluginOutcome": ".steps.dsl",
    "PostgresBackend": ".backends.postgres",
    "PricingNotConfiguredError": ".errors",
    "ProcessExecutor": ".executors",
    "RayExecutor": ".executors",
    "Restart": ".actors",
    "RestartIntensityExceeded": ".errors",
    "RestartRecord": ".actors",
    "RunExistsError": ".errors",
    "RunNotFoundError": ".errors",
    "RuntimeSnapshot": ".introspection",
    "SQLiteBackend": ".backends.sqlite",
    "SerializationError": ".errors",
    "Span": ".tracing",
    "StateBackend": ".backends.state",
    "StateBackendError": ".errors",
    "Step": ".steps.dsl",
    "StepBase": ".steps.dsl",
    "StepConfig": ".steps.dsl",
    "StepFailed": ".errors",
    "StepResult": ".results",
    "Strategy": ".actors",
    "StreamRetried": ".results",
    "Supervisor": ".actors",
    "SupervisorEvent": ".actors",
    "SupervisorStatistics": ".actors",
    "Usage": ".results",
    "UsageLimitExceededError": ".errors",
    "UsageLimits": ".limits",
    "UsageReportError": ".errors",
    "WorkItem": ".executors",
    "WorkResult": ".executors",
    "dump_typed": ".serialization",
    "load_typed": ".serialization",
    "open_actor": ".actors",
    "open_dynamic_supervisor": ".actors",
    "open_supervisor": ".actors",
    "register_custom_deserializer": ".serialization",
    "register_custom_serializer": ".serialization",
    "register_usage_extractor": ".policy.usage",
    "safe_deserialize": ".serialization",
    "safe_serialize": ".serialization",
    "start_actor": ".actors",
    "step": ".steps.dsl",
    "usage_of": ".policy.usage",
}

if not TYPE_CHECKING:  # type checkers see the explicit imports above instead

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'flujo_actors' has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorDown",
    "ActorExit",
    "ActorRef",
    "ActorSnapshot",
    "ActorStatistics",
    "ActorStopped",
    "AnyStep",
    "AskTimeout",
    "AsyncioInTrioError",
    "Backoff",
    "BranchFailureStrategy",
    "CacheBackend",
    "CacheSkippedWarning",
    "ChildCounts",
    "ChildCrashed",
    "ChildInfo",
    "ChildRestarted",
    "ChildSpec",
    "ChildStarted",
    "ChildStopped",
    "ConditionalStep",
    "DeadLetter",
    "DeadLettered",
    "DeadLetters",
    "DynamicParallelRouterStep",
    "DynamicSupervisor",
    "ExecutionFrame",
    "Executor",
    "ExecutorLost",
    "Flujo",
    "FlujoError",
    "FlujoInternalError",
    "HookError",
    "HumanInputError",
    "HumanInputStep",
    "InMemoryLRUBackend",
    "InMemoryStateBackend",
    "InfiniteFallbackError",
    "InlineExecutor",
    "LoopStep",
    "MailboxFull",
    "MapItemDone",
    "MapItems",
    "MapStep",
    "MaxChildrenExceeded",
    "MergeStrategy",
    "Monitor",
    "ParallelStep",
    "PausedRun",
    "PendingInput",
    "Pipeline",
    "PipelineContext",
    "PipelineDefinitionError",
    "PipelineResult",
    "PipelineStep",
    "PluginOutcome",
    "PostgresBackend",
    "PricingNotConfiguredError",
    "ProcessExecutor",
    "RayExecutor",
    "Restart",
    "RestartIntensityExceeded",
    "RestartRecord",
    "RunExistsError",
    "RunNotFoundError",
    "RuntimeSnapshot",
    "SQLiteBackend",
    "SerializationError",
    "Span",
    "StateBackend",
    "StateBackendError",
    "Step",
    "StepBase",
    "StepConfig",
    "StepFailed",
    "StepResult",
    "Strategy",
    "StreamRetried",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorStatistics",
    "Usage",
    "UsageLimitExceededError",
    "UsageLimits",
    "UsageReportError",
    "WorkItem",
    "WorkResult",
    "dump_typed",
    "load_typed",
    "open_actor",
    "open_dynamic_supervisor",
    "open_supervisor",
    "register_custom_deserializer",
    "register_custom_serializer",
    "register_usage_extractor",
    "safe_deserialize",
    "safe_serialize",
    "start_actor",
    "step",
    "usage_of",
]
