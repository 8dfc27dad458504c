"""The actor kernel and supervision trees (public, for embedding in trio apps)."""

from ..policy.intensity import Backoff as Backoff
from ..policy.intensity import RestartRecord as RestartRecord
from .actor import Actor as Actor
from .actor import ActorCell as ActorCell
from .actor import ActorRef as ActorRef
from .actor import ActorStatistics as ActorStatistics
from .actor import ReplySlot as ReplySlot
from .actor import run_actor as run_actor
from .actor import start_actor as start_actor
from .deadletters import DeadLetter as DeadLetter
from .deadletters import DeadLetters as DeadLetters
from .events import ChildCrashed as ChildCrashed
from .events import ChildRestarted as ChildRestarted
from .events import ChildStarted as ChildStarted
from .events import ChildStopped as ChildStopped
from .events import DeadLettered as DeadLettered
from .events import SupervisorEvent as SupervisorEvent
from .supervisor import ChildSpec as ChildSpec
from .supervisor import Restart as Restart
from .supervisor import Strategy as Strategy
from .supervisor import Supervisor as Supervisor
from .supervisor import SupervisorStatistics as SupervisorStatistics

__all__ = [
    "Actor",
    "ActorCell",
    "ActorRef",
    "ActorStatistics",
    "Backoff",
    "ChildCrashed",
    "ChildRestarted",
    "ChildSpec",
    "ChildStarted",
    "ChildStopped",
    "DeadLetter",
    "DeadLettered",
    "DeadLetters",
    "ReplySlot",
    "Restart",
    "RestartRecord",
    "Strategy",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorStatistics",
    "run_actor",
    "start_actor",
]
