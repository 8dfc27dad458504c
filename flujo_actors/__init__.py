"""flujo_actors: an actor-model pipeline runtime for async Python agents, on trio."""

from .actors import Actor as Actor
from .actors import ActorRef as ActorRef
from .actors import DeadLetter as DeadLetter
from .actors import DeadLetters as DeadLetters
from .actors import start_actor as start_actor
from .errors import ActorCrashed as ActorCrashed
from .errors import ActorStopped as ActorStopped
from .errors import AskTimeout as AskTimeout
from .errors import FlujoError as FlujoError
from .errors import MailboxFull as MailboxFull

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "ActorStopped",
    "AskTimeout",
    "DeadLetter",
    "DeadLetters",
    "FlujoError",
    "MailboxFull",
    "start_actor",
]
