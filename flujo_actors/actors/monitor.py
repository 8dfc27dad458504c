"""Monitors: be told, without polling, when an actor stops for good.

``ref.monitor()`` returns a :class:`Monitor` (a ``trio.abc.AsyncResource``),
watching from that moment until it is closed; use it as an async context
manager::

    async with ref.monitor() as down:
        notice = await down.wait()      # ActorDown(name, reason, error)

"For good" means no restart follows: an unsupervised actor that stopped or
crashed, or a supervised child its supervisor will not restart (TEMPORARY,
TRANSIENT after a normal exit, ``stop_child``, the supervisor stopping or
giving up). A restart is not a down. Monitoring an actor that is already down
reports at once (OTP's ``noproc``), with the reason it went down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import trio

from .construct import NoPublicConstructor
from .exits import ActorDown

if TYPE_CHECKING:
    from .actor import ActorCell

__all__ = ["ActorDown", "Monitor"]


class Monitor(trio.abc.AsyncResource, metaclass=NoPublicConstructor):
    """One watcher of one actor. Cheap; any number may watch the same actor.

    There is no public constructor: :meth:`ActorRef.monitor` returns one.

    It watches from the moment ``ref.monitor()`` returns it until :meth:`aclose`
    (the end of its ``async with`` block); a monitor that is never closed keeps
    watching (and is kept alive by the actor) until the actor's cell goes away.
    """

    __slots__ = ("_cell", "_event", "down")
    _FACTORY: ClassVar[str] = "ref.monitor()"

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell
        self._event = trio.Event()
        #: The notice, once the actor is down (None until then).
        self.down: ActorDown | None = None
        cell.add_monitor(self)

    def _fire(self, down: ActorDown) -> None:
        if self.down is None:
            self.down = down
            self._event.set()

    async def wait(self) -> ActorDown:
        """Block until the actor is down; return the notice.

        Returns at once (after a checkpoint) if it is down already.
        Cancellation only stops the waiting: the monitor stays registered
        until it is closed.
        """
        await self._event.wait()
        assert self.down is not None
        return self.down

    async def aclose(self) -> None:
        """Stop watching (idempotent); a notice already received stays in :attr:`down`.

        A checkpoint; the monitor is unregistered before it, so a cancelled
        caller still stops watching.
        """
        self._cell.remove_monitor(self)
        await trio.lowlevel.checkpoint()
