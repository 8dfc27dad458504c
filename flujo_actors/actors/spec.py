"""Child specifications: what a supervisor starts, and how it restarts and stops it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .actor import STOP_GRACE_S, Actor
from .management import SupervisorManagement
from .strategy import Restart as Restart
from .strategy import Strategy as Strategy

if TYPE_CHECKING:
    from .supervisor import Supervisor  # noqa: TC004 (only annotations; attrs does not resolve them)

__all__ = [
    "ChildSpec",
    "Restart",
    "Strategy",
    "check_mailbox_size",
    "check_max_redeliveries",
    "check_shutdown_s",
]


def check_mailbox_size(where: str, size: object) -> None:
    if size == math.inf:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{where}: mailbox_size must be an int >= 0 or math.inf, got {size!r}.")


def check_max_redeliveries(where: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{where}: max_redeliveries must be an int >= 0, got {value!r}. Use 0 (the "
            "default) to dead-letter a message that crashed its handler, or N > 0 to hand it "
            "to the restarted actor up to N more times."
        )


def check_shutdown_s(where: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
    ):
        raise ValueError(
            f"{where}: shutdown_s must be a number of seconds >= 0 (0 kills at once, "
            f"math.inf waits for on_stop as long as it takes), got {value!r}."
        )


@attrs.frozen(init=False)
class ChildSpec:
    """How to build and restart one child of a :class:`Supervisor`.

    Args:
        name: the child's name, unique within its supervisor.
        factory: called as ``factory(*args)`` for every (re)start; must return
            a fresh :class:`Actor` or :class:`Supervisor` (pass the class, not
            an instance).
        *args: positional arguments for ``factory``.
        restart: when the child is restarted (see :class:`Restart`).
        mailbox_size: capacity of the child's mailbox (kept across restarts).
        shutdown_s: the grace ``on_stop`` gets whenever the child stops
            (shutdown, ``stop_child``, a restart, a crash): after that many
            seconds on trio's clock ``on_stop`` is cancelled. 0 kills at once
            (``on_stop`` is cancelled at its first checkpoint); ``math.inf``
            waits as long as it takes. A supervisor's own stop gives each child
            its grace in turn, in reverse start order.
        max_redeliveries: how many times a ``tell`` that crashed this child is
            handed to its restarted instance again (None: the supervisor's
            ``max_redeliveries``, 0 by default; see :class:`Supervisor`).

    Raises:
        ValueError: empty name, bad ``mailbox_size``, ``restart``, ``shutdown_s``
            or ``max_redeliveries``.
        TypeError: ``factory`` is not callable.
    """

    name: str
    factory: Callable[..., Actor | Supervisor]
    args: tuple[object, ...]
    restart: Restart
    mailbox_size: int | float
    shutdown_s: float
    max_redeliveries: int | None

    def __init__(
        self,
        name: str,
        factory: Callable[..., Actor | Supervisor],
        *args: object,
        restart: Restart = Restart.PERMANENT,
        mailbox_size: int | float = 1024,
        shutdown_s: float = STOP_GRACE_S,
        max_redeliveries: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"ChildSpec: name must be a non-empty string, got {name!r}.")
        # SupervisorManagement is every supervisor's base, defined below supervisor.py (which
        # imports this module), so checking against it needs no import cycle.
        if isinstance(factory, (Actor, SupervisorManagement)):
            kind = type(factory).__name__
            raise TypeError(
                f"ChildSpec {name!r}: factory must be a callable that builds the child, "
                f"got a {kind} instance; pass {kind}, not {kind}(...) (the supervisor "
                "needs a fresh instance for every restart)."
            )
        if not callable(factory):
            raise TypeError(
                f"ChildSpec {name!r}: factory must be callable (an Actor subclass or a "
                f"function returning an Actor or Supervisor), got {factory!r}."
            )
        if not isinstance(restart, Restart):
            raise ValueError(
                f"ChildSpec {name!r}: restart must be a Restart member "
                f"(Restart.PERMANENT, TRANSIENT or TEMPORARY), got {restart!r}."
            )
        check_mailbox_size(f"ChildSpec {name!r}", mailbox_size)
        check_shutdown_s(f"ChildSpec {name!r}", shutdown_s)
        if max_redeliveries is not None:
            check_max_redeliveries(f"ChildSpec {name!r}", max_redeliveries)
        self.__attrs_init__(
            name, factory, args, restart, mailbox_size, float(shutdown_s), max_redeliveries
        )

    def with_args(self, name: str, args: tuple[object, ...]) -> ChildSpec:
        """A copy named ``name`` whose factory also gets ``args`` (after the spec's own)."""
        values = attrs.asdict(self, recurse=False)
        values.update(name=name, args=self.args + args)
        copy = object.__new__(ChildSpec)
        copy.__attrs_init__(**values)
        return copy
