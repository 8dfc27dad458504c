"""Exit reasons: how an actor stops, and the ``ActorDown`` notice monitors get.

An actor stops in one of four ways, and the reason decides what a supervisor
does next (OTP's ``normal`` / ``shutdown`` / crash):

* ``"normal"``: it chose to stop (``self.exit()``, ``raise ActorExit()``), its
  mailbox was closed and drained, or ``ref.stop()`` stopped it.
* ``"shutdown"``: its supervisor stopped it (``stop()``, ``stop_child``, giving
  up), or it chose to (``self.exit("shutdown")``).
* ``"crashed"``: ``on_start`` or ``handle`` raised (or ``self.exit(other)``).
* ``"cancelled"``: the nursery it ran in was cancelled from outside.

``Restart.TRANSIENT`` restarts only after ``"crashed"``.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["NORMAL_EXITS", "ActorDown", "ActorExit"]

#: Reasons that are not a crash.
NORMAL_EXITS: Final = frozenset({"normal", "shutdown"})


class ActorExit(Exception):
    """Raised from ``on_start`` or ``handle`` to stop the actor on purpose.

    ``ActorExit()`` / ``ActorExit("normal")`` and ``ActorExit("shutdown")``
    are normal exits: the message being handled counts as handled, the queued
    messages go to dead letters (``"stopped"``), an ``ask`` being handled gets
    :class:`~flujo_actors.errors.ActorStopped`, and a ``TRANSIENT`` or
    ``TEMPORARY`` child is not restarted (a ``PERMANENT`` one comes back with a
    fresh, empty mailbox). Any other reason is a crash, exactly as if
    ``handle`` had raised.
    """

    def __init__(self, reason: str = "normal") -> None:
        if not isinstance(reason, str) or not reason:
            raise ValueError(
                f"ActorExit: reason must be a non-empty string ('normal', 'shutdown', or "
                f"any other text for a crash), got {reason!r}."
            )
        super().__init__(reason)
        self.reason = reason

    @property
    def is_crash(self) -> bool:
        """True unless the reason is ``"normal"`` or ``"shutdown"``."""
        return self.reason not in NORMAL_EXITS


@attrs.frozen
class ActorDown:
    """An actor stopped for good (see :meth:`ActorRef.monitor`).

    Attributes:
        name: the actor's name.
        reason: ``"normal"``, ``"shutdown"``, ``"crashed"`` or ``"cancelled"``
            (see this module's docstring).
        error: ``"Type: message"`` of the crash for ``"crashed"``, else None.
    """

    name: str
    reason: str
    error: str | None = None
