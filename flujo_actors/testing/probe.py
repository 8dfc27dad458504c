"""A test kit for actors and supervisors (Akka's TestKit, on trio's MockClock).

* :class:`Probe`: an actor that records what it receives, with
  :meth:`Probe.expect_message` and :meth:`Probe.expect_no_message`. Run it
  anywhere an actor runs (``probe.start(nursery)``, or
  ``ChildSpec("probe", probe.actor)`` under a supervisor: the record survives
  its restarts).
* :func:`crash`: make a running actor crash now, as if its handler raised.
* :func:`crash_storm`: drive a supervisor through a scripted series of crashes.

Everything here works without pytest: failed expectations raise
``AssertionError``. Timeouts are on trio's clock, so with
``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``) ``expect_no_message(within_s=60)`` takes no real time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio.testing

from ..actors.actor import Actor, ActorRef, start_actor

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..actors.management import SupervisorManagement

__all__ = ["CrashStorm", "CrashedOnPurpose", "Probe", "crash", "crash_storm"]


class CrashedOnPurpose(Exception):
    """The default error :func:`crash` and :func:`crash_storm` crash an actor with."""


class _ProbeActor(Actor):
    def __init__(self, probe: Probe) -> None:
        self._probe = probe

    async def handle(self, message: Any) -> Any:
        probe = self._probe
        probe.received.append(message)
        probe._send.send_nowait(message)
        return probe.reply(message) if probe.reply is not None else message


class Probe:
    """An actor that records every message it receives, for assertions.

    Args:
        name: its name when started with :meth:`start` (and in messages).
        reply: what an ``ask`` gets back: ``reply(message)`` (default: the
            message itself).

    ``received`` is every message so far, in arrival order. The ``expect_*``
    methods consume them one at a time, in the same order.
    """

    def __init__(self, name: str = "probe", *, reply: Callable[[Any], Any] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Probe: name must be a non-empty string, got {name!r}.")
        if reply is not None and not callable(reply):
            raise TypeError(f"Probe {name!r}: reply must be callable or None, got {reply!r}.")
        self.name = name
        self.reply = reply
        self.received: list[Any] = []
        self._send, self._receive = trio.open_memory_channel[Any](math.inf)
        self._ref: ActorRef | None = None

    def actor(self) -> Actor:
        """A fresh probe actor recording into this probe (a ``ChildSpec`` factory)."""
        return _ProbeActor(self)

    async def start(self, nursery: trio.Nursery, *, mailbox_size: int | float = 1024) -> ActorRef:
        """Start an unsupervised probe actor named ``name`` in ``nursery``; return its ref."""
        self._ref = await start_actor(
            nursery, self.actor(), name=self.name, mailbox_size=mailbox_size
        )
        return self._ref

    @property
    def ref(self) -> ActorRef:
        """The ref of the actor :meth:`start` started.

        Raises:
            RuntimeError: :meth:`start` was not called (under a supervisor,
                use ``sup.ref(name)``).
        """
        if self._ref is None:
            raise RuntimeError(
                f"Probe {self.name!r} was not started with probe.start(nursery); under a "
                "supervisor, use sup.ref(<child name>)."
            )
        return self._ref

    async def expect_message(
        self, predicate: Callable[[Any], bool] | None = None, *, timeout_s: float = 1.0
    ) -> Any:
        """Wait for the next message and return it; fail unless ``predicate(message)``.

        Raises:
            AssertionError: no message within ``timeout_s`` (trio's clock), or
                the next message does not satisfy ``predicate``.
        """
        with trio.move_on_after(timeout_s):
            message = await self._receive.receive()
            if predicate is not None and not predicate(message):
                raise AssertionError(
                    f"Probe {self.name!r}: the next message {message!r} does not match "
                    f"{_describe(predicate)}."
                )
            return message
        raise AssertionError(
            f"Probe {self.name!r}: no message within {timeout_s!r} s "
            f"(received so far: {self.received!r})."
        )

    async def expect_no_message(self, within_s: float) -> None:
        """Wait ``within_s`` seconds (trio's clock); fail if a message arrives meanwhile.

        Raises:
            AssertionError: a message arrived (it is named; it stays consumed).
        """
        with trio.move_on_after(within_s):
            message = await self._receive.receive()
            raise AssertionError(
                f"Probe {self.name!r}: expected no message within {within_s!r} s, got {message!r}."
            )


def _describe(predicate: Callable[[Any], bool]) -> str:
    return getattr(predicate, "__name__", None) or repr(predicate)


def crash(ref: ActorRef, error: Exception | None = None) -> None:
    """Crash the running actor behind ``ref`` now (default error: :class:`CrashedOnPurpose`).

    See :meth:`~flujo_actors.actors.ActorCell.crash`: whatever it was doing is
    cancelled, an ask it was handling gets ``ActorCrashed``, its supervisor
    (if any) handles a crash. Follow with
    ``await trio.testing.wait_all_tasks_blocked()`` to let a restart finish.

    Raises:
        RuntimeError: the actor is not running.
    """
    if error is None:
        error = CrashedOnPurpose(f"{ref.name} crashed on purpose")
    ref.cell.crash(error)


@attrs.frozen(kw_only=True)
class CrashStorm:
    """What :func:`crash_storm` did.

    Attributes:
        crashed: the paths crashed, in order.
        skipped: ``(path, why)`` for each step whose actor could not be
            crashed (not running, stopped for good, or the supervisor gone).
    """

    crashed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


async def crash_storm(
    sup: SupervisorManagement, script: Sequence[str | tuple[float, str]]
) -> CrashStorm:
    """Crash the actors of ``sup``'s tree in the scripted order.

    Each step is a path for :meth:`~flujo_actors.actors.Supervisor.lookup`
    (``"pool/worker-2"``), or ``(delay_s, path)`` to wait first (trio's clock).
    The path is looked up afresh for every step, so a restarted subtree is
    reached; after each crash the storm waits until every task is blocked,
    so the supervisor has handled it before the next step. A supervisor that
    gives up raises ``RestartIntensityExceeded`` into its own nursery, as
    always; the remaining steps are then skipped.
    """
    crashed: list[str] = []
    skipped: list[tuple[str, str]] = []
    for step in script:
        delay, path = (0.0, step) if isinstance(step, str) else step
        if delay:
            await trio.sleep(delay)
        try:
            ref = sup.lookup(path)
            crash(ref)
        except (LookupError, RuntimeError) as exc:
            skipped.append((path, str(exc)))
            continue
        crashed.append(path)
        await trio.testing.wait_all_tasks_blocked()
    return CrashStorm(crashed=tuple(crashed), skipped=tuple(skipped))
