"""The actor kernel and supervision trees (public, for embedding in trio apps)."""

import importlib
from typing import TYPE_CHECKING, Any

from .actor import Actor as Actor
from .actor import ActorCell as ActorCell
from .actor import ActorRef as ActorRef
from .actor import ActorStatistics as ActorStatistics
from .actor import ReplySlot as ReplySlot
from .actor import run_actor as run_actor
from .actor import start_actor as start_actor
from .deadletters import DeadLetter as DeadLetter
from .deadletters import DeadLetters as DeadLetters
from .exits import ActorDown as ActorDown
from .exits import ActorExit as ActorExit

if TYPE_CHECKING:
    from ..policy.intensity import Backoff as Backoff
    from ..policy.intensity import RestartRecord as RestartRecord
    from .dynamic import DynamicSupervisor as DynamicSupervisor
    from .events import ChildCrashed as ChildCrashed
    from .events import ChildRestarted as ChildRestarted
    from .events import ChildStarted as ChildStarted
    from .events import ChildStopped as ChildStopped
    from .events import DeadLettered as DeadLettered
    from .events import SupervisorEvent as SupervisorEvent
    from .management import ChildCounts as ChildCounts
    from .management import ChildInfo as ChildInfo
    from .monitor import Monitor as Monitor
    from .opening import open_actor as open_actor
    from .opening import open_dynamic_supervisor as open_dynamic_supervisor
    from .opening import open_supervisor as open_supervisor
    from .supervisor import ChildSpec as ChildSpec
    from .supervisor import Restart as Restart
    from .supervisor import Strategy as Strategy
    from .supervisor import Supervisor as Supervisor
    from .supervisor import SupervisorStatistics as SupervisorStatistics

_LAZY: dict[str, str] = {
    "Backoff": "..policy.intensity",
    "ChildCounts": ".management",
    "ChildInfo": ".management",
    "DynamicSupervisor": ".dynamic",
    "Monitor": ".monitor",
    "open_actor": ".opening",
    "open_dynamic_supervisor": ".opening",
    "open_supervisor": ".opening",
    "ChildCrashed": ".events",
    "ChildRestarted": ".events",
    "ChildSpec": ".supervisor",
    "ChildStarted": ".events",
    "ChildStopped": ".events",
    "DeadLettered": ".events",
    "Restart": ".supervisor",
    "RestartRecord": "..policy.intensity",
    "Strategy": ".supervisor",
    "Supervisor": ".supervisor",
    "SupervisorEvent": ".events",
    "SupervisorStatistics": ".supervisor",
}


if not TYPE_CHECKING:  # type checkers see the explicit imports above instead

    def __getattr__(name: str) -> Any:
        # Supervision loads on first use: the pipeline runtime needs only the kernel.
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'flujo_actors.actors' has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


__all__ = [
    "Actor",
    "ActorCell",
    "ActorDown",
    "ActorExit",
    "ActorRef",
    "ActorStatistics",
    "Backoff",
    "ChildCounts",
    "ChildCrashed",
    "ChildInfo",
    "ChildRestarted",
    "ChildSpec",
    "ChildStarted",
    "ChildStopped",
    "DeadLetter",
    "DeadLettered",
    "DeadLetters",
    "DynamicSupervisor",
    "Monitor",
    "ReplySlot",
    "Restart",
    "RestartRecord",
    "Strategy",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorStatistics",
    "open_actor",
    "open_dynamic_supervisor",
    "open_supervisor",
    "run_actor",
    "start_actor",
]
