"""``open_*`` factories: actors and supervisors that are running inside ``async with``.

A :class:`~.supervisor.Supervisor` or an actor built by hand is not running
until someone starts it in a nursery (``await nursery.start(sup.run)``,
``await start_actor(nursery, ...)``) and stops it again. These factories do
both, so the object a block gets is always set up::

    async with open_supervisor([ChildSpec("worker", Worker)]) as sup:
        await sup.ref("worker").tell("job")
    # every child has stopped (reverse start order) and no task is left

Each opens a nursery of its own. An error raised in the block, or the
supervisor's (or actor's) own failure, is raised as itself, not wrapped in
that nursery's ``ExceptionGroup`` (several errors at once stay a group).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import trio

from ..errors import sole_error
from .actor import start_actor
from .dynamic import DynamicSupervisor
from .supervisor import Supervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from .actor import Actor, ActorRef
    from .deadletters import DeadLetters

__all__ = ["open_actor", "open_dynamic_supervisor", "open_supervisor"]

P = ParamSpec("P")
S = TypeVar("S", bound=Supervisor)


@asynccontextmanager
async def _own_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone error is raised as itself (the block's or a task's)."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        leaf = sole_error(group)
        if leaf is group:
            raise
        raise leaf from leaf.__cause__


@asynccontextmanager
async def open_actor(
    actor: Actor,
    *,
    name: str,
    mailbox_size: int | float = 1024,
    dead_letters: DeadLetters | None = None,
) -> AsyncIterator[ActorRef]:
    """Run ``actor`` for the duration of the block; the block gets its ref.

    The block starts once ``on_start`` ran. Leaving it stops the actor
    (:meth:`ActorRef.stop`: queued messages go to dead letters, ``on_stop``
    runs) and waits until it has stopped. Unsupervised: if the actor crashes,
    the block is cancelled and the handler's exception is raised from the
    ``async with`` (use :func:`open_supervisor` to restart it instead).

    Cancelled (the block, or a scope around it): the actor is cancelled too,
    its ``on_stop`` runs shielded, and nothing is left running.

    Raises:
        ValueError: a bad ``mailbox_size``.
        Exception: ``on_start`` or a handler raised (as itself).
    """
    async with _own_nursery() as nursery:
        ref = await start_actor(
            nursery, actor, name=name, mailbox_size=mailbox_size, dead_letters=dead_letters
        )
        try:
            yield ref
        finally:
            await ref.stop()


@asynccontextmanager
async def _running(supervisor: S) -> AsyncIterator[S]:
    async with _own_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield supervisor
        finally:
            await supervisor.stop()


def _opener(
    make: Callable[P, S], name: str, doc: str
) -> Callable[P, AbstractAsyncContextManager[S]]:
    """An ``open_*`` function taking ``make``'s arguments (one signature, checked by mypy)."""

    def open_running(*args: P.args, **kwargs: P.kwargs) -> AbstractAsyncContextManager[S]:
        # Built now, before `async with`: a bad option raises at the call.
        return _running(make(*args, **kwargs))

    open_running.__name__ = open_running.__qualname__ = name
    open_running.__doc__ = doc
    return open_running


open_supervisor = _opener(
    Supervisor,
    "open_supervisor",
    """Run ``Supervisor(children, **options)`` for the duration of the block.

    Takes exactly :class:`~flujo_actors.actors.Supervisor`'s arguments and
    builds it at the call (a bad option raises there, before anything
    starts). The block gets the supervisor once every child's ``on_start``
    ran; leaving it stops every child in reverse start order
    (:meth:`Supervisor.stop`) and waits for them.

    Cancelled (the block, or a scope around it): every child is cancelled,
    each ``on_stop`` runs shielded, and nothing is left running.

    Raises:
        RestartIntensityExceeded: the supervisor gave up (the block is
            cancelled first).
        Exception: a child failed to start, or the block raised (as itself).
    """,
)

open_dynamic_supervisor = _opener(
    DynamicSupervisor,
    "open_dynamic_supervisor",
    """Run ``DynamicSupervisor(spec, max_children=None, **options)`` for the duration of the block.

    Takes exactly :class:`~flujo_actors.actors.DynamicSupervisor`'s
    arguments (built at the call); the block starts children with
    ``await dyn.start_child(*args)``. Leaving it, an error and cancellation
    behave as in :func:`open_supervisor`.
    """,
)
