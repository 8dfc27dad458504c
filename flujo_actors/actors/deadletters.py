"""Dead letters: messages that could not be delivered or answered.

Nothing sent to an actor vanishes silently: a message for a stopped actor, a
message left in the mailbox when an actor stopped, a reply that arrived after
its asker gave up, and a message whose handler crashed the actor all land
here, where they can be inspected (:meth:`DeadLetters.snapshot`) or streamed
(:meth:`DeadLetters.subscribe`).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

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


class DeadLetters:
    """A bounded log of dead letters plus live subscribers.

    The log keeps the newest ``capacity`` letters (older ones are counted in
    ``dropped``). Subscribers get every letter through a memory channel; a
    subscriber that does not keep up loses letters (counted), it never blocks
    the actor that produced them.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"DeadLetters: capacity must be >= 1, got {capacity!r}.")
        self._log: collections.deque[DeadLetter] = collections.deque(maxlen=capacity)
        self._subscribers: list[trio.MemorySendChannel[DeadLetter]] = []
        self._listeners: list[Callable[[DeadLetter], None]] = []
        self.total = 0
        self.dropped = 0

    def record(self, recipient: str, message: Any, reason: str) -> DeadLetter:
        """Record a dead letter; never blocks and never raises."""
        letter = DeadLetter(recipient=recipient, message=message, reason=reason)
        if len(self._log) == self._log.maxlen:
            self.dropped += 1
        self._log.append(letter)
        self.total += 1
        for send in tuple(self._subscribers):
            try:
                send.send_nowait(letter)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)
        for listener in tuple(self._listeners):
            listener(letter)
        return letter

    def snapshot(self) -> list[DeadLetter]:
        """The letters currently kept, oldest first."""
        return list(self._log)

    def __len__(self) -> int:
        return len(self._log)

    def subscribe(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[DeadLetter]:
        """A channel receiving every letter recorded from now on.

        Close the returned channel to unsubscribe.
        """
        send, receive = trio.open_memory_channel[DeadLetter](buffer)
        self._subscribers.append(send)
        return receive

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
