"""Dead letters: messages that could not be delivered or answered.

Nothing sent to an actor vanishes silently: a message for a stopped actor, a
message left in the mailbox when an actor stopped, a reply that arrived after
its asker gave up, and a message whose handler crashed the actor all land
here, where they can be inspected (:meth:`DeadLetters.snapshot`) or streamed
(:meth:`DeadLetters.subscribe`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

from .eventlog import EventLog

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DeadLetter", "DeadLetters"]

DEFAULT_CAPACITY: Final = 10_000


@attrs.frozen(kw_only=True)
class DeadLetter:
    """One undeliverable message.

    Attributes:
        recipient: name of the actor it was meant for (or that produced the reply).
        message: the message (or the late reply value).
        reason: why it is here: ``"stopped"`` (sent to, queued in, or being
            handled by an actor that stopped), ``"late-reply"`` (a reply whose
            asker gave up), ``"crashed"`` (a ``tell`` whose handler crashed
            the actor: by default it is not handed out again), ``"poison"``
            (with a supervisor's ``max_redeliveries=N``, it crashed the actor
            N + 1 times in a row).
    """

    recipient: str
    message: Any
    reason: str


class DeadLetters(EventLog[DeadLetter]):
    """A bounded log of dead letters plus live subscribers (an :class:`~.eventlog.EventLog`).

    The log keeps the newest ``capacity`` letters; ``dropped`` counts the
    older ones pushed out and those a subscriber did not keep up with
    (through a memory channel, :meth:`subscribe`): a slow subscriber never
    blocks the actor that produced the letter. ``total`` counts every
    letter recorded.
    """

    __slots__ = ("_listeners", "total")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(capacity, owner="DeadLetters")
        self._listeners: list[Callable[[DeadLetter], None]] = []
        self.total = 0

    def record(self, recipient: str, message: Any, reason: str) -> DeadLetter:
        """Record a dead letter; never blocks and never raises."""
        letter = DeadLetter(recipient=recipient, message=message, reason=reason)
        self.emit(letter)
        self.total += 1
        for listener in tuple(self._listeners):
            listener(letter)
        return letter

    def add_listener(self, listener: Callable[[DeadLetter], None]) -> None:
        """Call ``listener(letter)`` synchronously for every letter recorded from now on.

        Listeners must be quick and must not raise (supervisors use this to
        turn letters into ``DeadLettered`` events).
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[DeadLetter], None]) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)
