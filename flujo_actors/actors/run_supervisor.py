"""The per-run supervisor: every runtime actor of a run runs under it.

A run's actors (the governor, the persistence actor, the step actors and
the branch tasks that carry them) run in the run's nursery, under one
:class:`RunSupervisor`. Its strategy is ONE_FOR_ALL with a restart
intensity of 0: the first actor to crash stops them all and fails the run.

Why no restarts: a run's actors share state (the governor's ledger and its
reservations, the job histories, the live context, the checkpoints written
so far). A restarted governor would have lost usage already reported; a
restarted step actor would run a step again whose side effects already
happened. A runtime actor crashing is a bug in the runtime or a failed run,
never something to retry blindly; retrying *steps* is the attempt
supervisor's job, under the step's own retry policy.

A runtime actor's crash fails the run with a :class:`FlujoInternalError`
naming the actor and chaining its error; nothing hangs: the nursery
cancels every other actor, and the crashed actor's mailbox answers its
waiting askers with ``ActorStopped``. (A step's exception is not a crash of
the runtime: steps report failures as results, and what escapes them, such
as a hook's error, fails the run as itself.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FlujoInternalError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import trio

    from .actor import ActorCell

__all__ = ["RunSupervisor"]


class RunSupervisor:
    """Supervises the runtime actors of one run in the run's nursery (ONE_FOR_ALL, intensity 0).

    Args:
        run_id: the run (named in the error of a crash).
        nursery: the run's nursery: cancelling it stops every actor of the run.
    """

    __slots__ = ("nursery", "run_id")

    def __init__(self, run_id: str, nursery: trio.Nursery) -> None:
        self.run_id = run_id
        self.nursery = nursery

    def start(self, main: Callable[[], Awaitable[None]], cell: ActorCell) -> None:
        """Start a runtime actor (``main`` runs its loop on ``cell``) under this supervisor."""
        self.nursery.start_soon(self._supervise, main, cell)

    async def _supervise(self, main: Callable[[], Awaitable[None]], cell: ActorCell) -> None:
        try:
            await main()
        except Exception as exc:
            # ONE_FOR_ALL, intensity 0: raising into the run's nursery cancels every
            # other actor of the run; the runner raises this error from run_async.
            raise FlujoInternalError(
                f"Runtime actor {cell.name!r} of run {self.run_id!r} crashed "
                f"({type(exc).__name__}: {exc}); the run was stopped. This is a bug in "
                "flujo_actors, not in the pipeline: please report it with the traceback."
            ) from exc
