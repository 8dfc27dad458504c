"""A cheap cell for an actor that handles one message and leaves: :class:`OneShotCell`.

The runtime makes one per step each fan-out item or branch runs (a map over
10,000 items makes 10,000), so its construction is on the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .actor import STOP_GRACE_S, ActorCell

if TYPE_CHECKING:
    from .deadletters import DeadLetters
    from .mailbox import OneShotMailbox
    from .registry import Registry

__all__ = ["OneShotCell"]


class OneShotCell(ActorCell):
    """An :class:`ActorCell` on a :class:`~.mailbox.OneShotMailbox`, run by :func:`~.actor.run_turn`.

    It behaves as a full cell; it is only made in half the time: the fields
    a cell starts with and such a cell rarely changes are class-level
    defaults here (they shadow the base's slots), and the few its turn
    writes (``state``, ``current``, ``handled``) land in the instance dict.
    Cancellation: nothing here awaits.
    """

    task = None
    state = "new"
    handled = 0
    restarts = 0
    last_error = None
    current = None
    instance = None
    stop_grace_s = STOP_GRACE_S
    exit_reason = None
    down = None
    _monitors = None
    _injected = None
    supervised = False
    cancellable = True
    _active = False
    _stopped = None
    _cancel_scope = None
    _ref = None

    def __init__(
        self,
        name: str,
        dead_letters: DeadLetters,
        mailbox: OneShotMailbox,
        registry: Registry | None,
        kind: str,
        path: tuple[str, ...],
    ) -> None:
        # No super().__init__: every other field is a class default above.
        if not name:
            raise ValueError("Actor name must be a non-empty string, got ''.")
        self.name = name
        self.mailbox = mailbox
        self.dead_letters = dead_letters
        self.kind = kind
        self.path = path
        self.registry = registry
