"""The actor kernel and supervision trees (public, for embedding in trio apps)."""

from .actor import Actor as Actor
from .actor import ActorCell as ActorCell
from .actor import ActorRef as ActorRef
from .actor import ActorStatistics as ActorStatistics
from .actor import ReplySlot as ReplySlot
from .actor import run_actor as run_actor
from .actor import start_actor as start_actor
from .deadletters import DeadLetter as DeadLetter
from .deadletters import DeadLetters as DeadLetters

__all__ = [
    "Actor",
    "ActorCell",
    "ActorRef",
    "ActorStatistics",
    "DeadLetter",
    "DeadLetters",
    "ReplySlot",
    "run_actor",
    "start_actor",
]
