"""OTP-style supervision trees for actors, embeddable in any trio application.

A :class:`Supervisor` starts its children (actors, or other supervisors) in
order, restarts them when they exit according to their :class:`Restart` type
and its :class:`Strategy`, and gives up (stopping every child in reverse
start order, then raising :class:`~flujo_actors.errors.RestartIntensityExceeded`)
when they restart too often. It runs inside a nursery its caller owns::

    async with trio.open_nursery() as nursery:
        sup = await nursery.start(Supervisor([ChildSpec("worker", Worker)]).run)
        await sup.ref("worker").tell("job")

Delivery rules (what happens to messages when children crash or stop):

* A restarted actor keeps its mailbox (the same :class:`ActorCell`): queued
  messages survive, and refs handed out earlier stay valid.
* One crash costs one restart. By default (``max_redeliveries=0``) the
  ``tell`` whose handler crashed goes to dead letters with reason
  ``"crashed"`` and the restarted actor continues with the next queued
  message (at-most-once: the message is never lost silently, and a bad
  message cannot crash the actor again).
* At-least-once is explicit: with ``max_redeliveries=N`` (on the
  :class:`Supervisor` for every child, or on one :class:`ChildSpec`) the
  crashing ``tell`` goes back to the head of the mailbox and is handed to the
  restarted actor first, up to ``N`` times; when the same message crashes the
  actor ``N + 1`` times in a row it goes to dead letters with reason
  ``"poison"``. Every one of those crashes is a restart that counts towards
  ``max_restarts``.
* An ``ask`` whose handler crashed is answered with
  :class:`~flujo_actors.errors.ActorCrashed` at once and never handled again,
  whatever ``max_redeliveries`` says (the asker holds the error and decides
  whether to retry; it is not dead-lettered as well).
* When the supervisor restarts an actor because a sibling crashed, the
  ``tell`` it was handling is handed to the new instance first; an ``ask``
  it was handling is answered with :class:`~flujo_actors.errors.ActorStopped`.
* A message the supervisor will never deliver (the child stopped for good,
  or everything was cancelled) goes to dead letters: ``"stopped"`` for
  queued or interrupted messages, ``"crashed"`` for the message that
  crashed a child that is not restarted.
* ``ref.stop()`` on a supervised child is a normal exit: the queued messages
  go to dead letters, and a ``PERMANENT`` child comes back with a fresh,
  empty mailbox (use :meth:`Supervisor.stop_child` to stop it for good).

Nested supervisors: a :class:`ChildSpec` whose factory returns a
:class:`Supervisor` makes a subtree. A nested supervisor is not an actor and
has no mailbox: ``sup.ref("inner")`` raises ``LookupError``;
``sup.supervisor("inner")`` returns the running nested supervisor, whose
``ref()`` reaches its own children. When the nested supervisor exceeds its
restart intensity it crashes, and its parent handles that like any other
crash (restarting it builds a fresh subtree from the factory, so refs into
the old subtree stop working: look them up again). A nested supervisor built
without ``dead_letters=`` shares its parent's dead-letter log.

(Over 500 lines: the restart machinery (start, watch, restart, give up,
stop) is one state machine over child records that its request loop shares;
cut in two, one invariant would span two files. Child specs (spec.py),
management (management.py), events (events.py), the dynamic supervisor
(dynamic.py) and the ``open_*`` factories (opening.py) live apart.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ..errors import RestartIntensityExceeded
from ..policy.intensity import Backoff, RestartIntensity, RestartRecord
from .actor import Actor, ActorCell, ActorRef, ActorStatistics, ReplySlot, _Ask, run_actor
from .deadletters import DeadLetter, DeadLetters
from .events import (
    DEFAULT_EVENT_CAPACITY,
    ChildCrashed,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    DeadLettered,
    EventLog,
    SupervisorEvent,
)
from .management import SupervisorManagement, _Call
from .spec import ChildSpec, Restart, Strategy, check_max_redeliveries

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

__all__ = [
    "ChildSpec",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorStatistics",
]

#: By default the message that crashed its handler is not handed out again.
DEFAULT_MAX_REDELIVERIES: Final = 0


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A point-in-time view of a supervisor (see :meth:`Supervisor.statistics`).

    Attributes:
        name: the supervisor's name.
        state: ``"new"``, ``"starting"``, ``"running"``, ``"stopping"``,
            ``"stopped"`` or ``"failed"`` (gave up, or failed to start).
        strategy: its restart strategy.
        children: one :class:`ActorStatistics` per child, in start order (a
            nested supervisor appears with an empty mailbox).
        restarts: restarts performed during the current (or last) run.
        dead_letters: letters recorded in its dead-letter log so far.
    """

    name: str
    state: str
    strategy: Strategy
    children: tuple[ActorStatistics, ...]
    restarts: int
    dead_letters: int


class _Child:
    """The supervisor's record of one child: spec, cell and restart bookkeeping."""

    __slots__ = (
        "backoff_attempt",
        "backoff_handled",
        "cell",
        "done",
        "generation",
        "max_redeliveries",
        "nested",
        "pending_restart",
        "redelivery_reason",
        "scope",
        "spec",
        "stopped",
        "streak",
        "streak_handled",
        "streak_message",
        "terminating",
    )

    def __init__(self, spec: ChildSpec, dead_letters: DeadLetters, max_redeliveries: int) -> None:
        self.spec = spec
        self.max_redeliveries = (
            spec.max_redeliveries if spec.max_redeliveries is not None else max_redeliveries
        )
        self.cell = ActorCell(spec.name, spec.mailbox_size, dead_letters)
        self.cell.supervised = True
        self.nested: Supervisor | None = None
        self.scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.done.set()  # no task yet
        self.generation = 0
        self.terminating = False
        self.stopped = False
        # (delay_s, error) of the restart under way; None for a first start.
        self.pending_restart: tuple[float, str | None] | None = None
        # Why the message kept at the head of its mailbox would be dead.
        self.redelivery_reason = "stopped"
        self.streak_message: Any = None
        self.streak = 0
        self.streak_handled = -1
        self.backoff_attempt = 0
        self.backoff_handled = 0


class _Started(trio.TaskStatus[object]):
    """Task status for one run of a child: records the start and emits its event."""

    __slots__ = ("called", "child", "real", "sup")

    def __init__(self, sup: Supervisor, child: _Child, real: trio.TaskStatus[None] | None) -> None:
        self.sup = sup
        self.child = child
        self.real = real
        self.called = False

    def started(self, value: object = None) -> None:
        self.called = True
        if self.real is not None:
            self.real.started()
        self.sup._child_started(self.child)


@attrs.frozen
class _Exited:
    child: _Child
    generation: int
    error: str | None


@attrs.frozen
class _GiveUp:
    error: RestartIntensityExceeded


@attrs.frozen
class _StartChild:
    spec: ChildSpec
    slot: ReplySlot


@attrs.frozen
class _StopChild:
    name: str
    slot: ReplySlot


class _Stop:
    pass


_STOP: Final = _Stop()
_Request = _Exited | _GiveUp | _StartChild | _StopChild | _Call | _Stop


#: ActorDown reasons for the ChildStopped reasons (the supervisor stopped it: shutdown).
_DOWN_REASONS: Final = {"intensity": "shutdown", "stop_child": "shutdown"}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Supervisor(SupervisorManagement):
    """Starts, watches and restarts a group of children (OTP semantics).

    Args:
        children: the children, in start order.
        strategy: which children restart when one must (:class:`Strategy`).
        max_restarts: restarts allowed within ``max_seconds`` (whole
            supervisor, sliding window on trio's clock) before it gives up.
        max_seconds: the length of that window.
        backoff: delay between a crash and its restart (None: restart at once).
        name: the supervisor's name (events, errors, statistics).
        max_redeliveries: how many times a ``tell`` whose handler crashed is
            handed to the restarted actor again (a :class:`ChildSpec` may set
            its own). 0, the default: never; the message goes to dead letters
            with reason ``"crashed"``, so one crash costs one restart. N > 0:
            at-least-once delivery; a message that crashed the actor N + 1
            times in a row goes to dead letters with reason ``"poison"``.
            Asks are never redelivered.
        dead_letters: the dead-letter log its children share (a fresh one if
            None; a nested supervisor then uses its parent's).

    Raises:
        ValueError: duplicate child names or a bad option.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: Backoff | None = None,
        name: str | None = None,
        max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        label = name if name is not None else "supervisor"
        if not isinstance(label, str) or not label:
            raise ValueError(f"Supervisor: name must be a non-empty string, got {name!r}.")
        specs = tuple(children)
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(
                    f"Supervisor {label!r}: children must be ChildSpec objects, got {spec!r}."
                )
            if spec.name in seen:
                raise ValueError(
                    f"Supervisor {label!r}: two children are named {spec.name!r}; "
                    "child names must be unique."
                )
            seen.add(spec.name)
        if not isinstance(strategy, Strategy):
            raise ValueError(
                f"Supervisor {label!r}: strategy must be a Strategy member, got {strategy!r}."
            )
        try:
            RestartIntensity(max_restarts, max_seconds)
        except ValueError as exc:
            raise ValueError(f"Supervisor {label!r}: {exc}") from None
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ValueError(
                f"Supervisor {label!r}: backoff must be a Backoff or None, got {backoff!r}."
            )
        check_max_redeliveries(f"Supervisor {label!r}", max_redeliveries)
        self.name = label
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_redeliveries = max_redeliveries
        self._specs = specs
        self._owns_dead_letters = dead_letters is None
        self._dead_letters = dead_letters if dead_letters is not None else DeadLetters()
        self._events: EventLog[SupervisorEvent] = EventLog(DEFAULT_EVENT_CAPACITY)
        self._state = "new"
        self._children: dict[str, _Child] = {}
        self._order: list[_Child] = []
        self._intensity = RestartIntensity(max_restarts, max_seconds)
        self._restarts = 0
        self._rng: random.Random | None = None
        self._accepting_restarts = False
        self._nursery: trio.Nursery | None = None
        self._requests_send: trio.MemorySendChannel[_Request] | None = None
        self._stop_requested = trio.Event()
        self._finished = trio.Event()
        self._pending: list[_StartChild | _StopChild | _Call] = []

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} ({self._state}, {len(self._order)} children)>"

    # -- public API --------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order and supervise them until stopped.

        ``task_status.started(self)`` is called once every child's
        ``on_start`` ran (so ``sup = await nursery.start(s.run)`` gives a
        supervisor whose refs are ready). Returns after :meth:`stop`.

        Raises:
            RestartIntensityExceeded: too many restarts; every child was
                stopped in reverse start order first. ``history`` holds the
                :class:`RestartRecord` entries of the window that broke it.
            Exception: a child failed to start during the initial start (the
                children already started were stopped in reverse order).
            RuntimeError: this supervisor is already running.

        On cancellation every child is cancelled (each ``on_stop`` runs),
        their mailboxes are closed (queued messages go to dead letters) and
        no task is left behind.
        """
        self._begin_run()
        failure: BaseException | None = None
        self._dead_letters.add_listener(self._on_dead_letter)
        requests_send, requests_receive = trio.open_memory_channel[_Request](math.inf)
        self._requests_send = requests_send
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                failure = await self._start_initial()
                if failure is None:
                    self._state = "running"
                    task_status.started(self)
                    failure = await self._serve(requests_receive)
        finally:
            self._end_run(failure)
        if failure is not None:
            raise failure

    def ref(self, name: str) -> ActorRef:
        """The ref of child ``name`` (valid across its restarts).

        Raises:
            LookupError: no child has that name (or the supervisor has not
                started yet), or the child is a nested supervisor (use
                :meth:`supervisor`).
        """
        child = self._child(name)
        if child.nested is not None:
            raise LookupError(
                f"Child {name!r} of supervisor {self.name!r} is a supervisor, not an actor; "
                f"use sup.supervisor({name!r}).ref(...) to reach its children."
            )
        return child.cell.ref

    def supervisor(self, name: str) -> Supervisor:
        """The running nested supervisor ``name`` (its current incarnation).

        Raises:
            LookupError: no child has that name, it is an actor (use :meth:`ref`)
                or it has not been started.
        """
        child = self._child(name)
        if child.nested is None:
            if child.generation == 0:
                raise LookupError(
                    f"Child {name!r} of supervisor {self.name!r} has not been started."
                )
            raise LookupError(
                f"Child {name!r} of supervisor {self.name!r} is an actor, not a supervisor; "
                f"use sup.ref({name!r})."
            )
        return child.nested

    async def start_child(self, spec: ChildSpec) -> None:
        """Add ``spec`` as the last child and start it; returns once its ``on_start`` ran.

        A stopped child with the same name is replaced (with a fresh mailbox).
        Cancelling the caller does not cancel the start (the supervisor
        carries it out); it only stops the waiting.

        Raises:
            ValueError: a running child already has that name.
            RuntimeError: the supervisor is not running.
            Exception: the child failed to start (it is not added).
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child expects a ChildSpec, got {spec!r}.")
        slot = self._request(_StartChild(spec, ReplySlot()), "start_child")
        await slot.wait()

    async def stop_child(self, name: str) -> None:
        """Stop child ``name`` for good (no restart) and wait until its ``on_stop`` ran.

        Its queued messages go to dead letters; later messages too. Cancelling
        the caller only stops the waiting.

        Raises:
            LookupError: no child has that name.
            RuntimeError: the supervisor is not running.
        """
        self._child(name)
        slot = self._request(_StopChild(name, ReplySlot()), "stop_child")
        await slot.wait()

    async def stop(self) -> None:
        """Stop every child in reverse start order, then let :meth:`run` return.

        Waits until the supervisor has stopped. Safe to call more than once,
        before it started (then a no-op) or from one of its own children
        (whose handler is then cancelled as part of the stop). Cancelling the
        caller only stops the waiting: the supervisor still stops.
        """
        if self._state in ("new", "stopped", "failed"):
            return
        if not self._stop_requested.is_set():
            self._stop_requested.set()
            if self._requests_send is not None:
                self._requests_send.send_nowait(_STOP)
        await self._finished.wait()

    def dead_letters(self) -> list[DeadLetter]:
        """The dead letters kept so far, oldest first (see :attr:`dead_letter_log`)."""
        return self._dead_letters.snapshot()

    @property
    def dead_letter_log(self) -> DeadLetters:
        """The dead-letter log shared by this supervisor's children."""
        return self._dead_letters

    def subscribe_dead_letters(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[DeadLetter]:
        """A channel receiving every dead letter from now on; close it to unsubscribe."""
        return self._dead_letters.subscribe(buffer)

    def events(self) -> list[SupervisorEvent]:
        """The events kept so far (``ChildStarted``, ``ChildCrashed``, ...), oldest first."""
        return self._events.snapshot()

    def subscribe_events(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[SupervisorEvent]:
        """A channel receiving every event from now on; close it to unsubscribe.

        A subscriber that falls more than ``buffer`` events behind loses
        events; it never slows the supervisor down.
        """
        return self._events.subscribe(buffer)

    def statistics(self) -> SupervisorStatistics:
        """State, per-child :class:`ActorStatistics`, restarts and dead letters."""
        return SupervisorStatistics(
            name=self.name,
            state=self._state,
            strategy=self.strategy,
            children=tuple(child.cell.statistics() for child in self._order),
            restarts=self._restarts,
            dead_letters=self._dead_letters.total,
        )

    # -- run lifecycle -----------------------------------------------------

    def _begin_run(self) -> None:
        if self._state in ("starting", "running", "stopping"):
            raise RuntimeError(
                f"Supervisor {self.name!r} is already running; a supervisor runs once at "
                "a time (build another one, or give ChildSpec a factory)."
            )
        self._state = "starting"
        self._children = {}
        self._order = []
        for spec in self._specs:
            self._add(spec)
        self._intensity = RestartIntensity(self.max_restarts, self.max_seconds)
        self._restarts = 0
        self._rng = self.backoff.make_rng() if self.backoff is not None else None
        self._accepting_restarts = True
        self._stop_requested = trio.Event()
        self._finished = trio.Event()

    def _end_run(self, failure: BaseException | None) -> None:
        # Runs on every exit, cancellation included: nothing may stay queued
        # or half-alive (the nursery has already waited for every child task).
        self._accepting_restarts = False
        self._nursery = None
        if self._requests_send is not None:
            self._requests_send.close()
            self._requests_send = None
        for child in reversed(self._order):
            if not child.stopped:
                self._finalize(child, "cancelled")
        for request in self._pending:
            if isinstance(request, _StopChild):
                request.slot.set(None)  # done: every child is stopped now
            elif isinstance(request, _Call):
                request.slot.fail(
                    RuntimeError(f"Supervisor {self.name!r} stopped before {request.what}.")
                )
            else:
                request.slot.fail(
                    RuntimeError(
                        f"Supervisor {self.name!r} stopped before starting child "
                        f"{request.spec.name!r}."
                    )
                )
        self._pending.clear()
        self._dead_letters.remove_listener(self._on_dead_letter)
        self._state = "stopped" if failure is None else "failed"
        self._finished.set()

    def _request(self, request: _StartChild | _StopChild | _Call, what: str) -> ReplySlot:
        if self._state != "running" or self._requests_send is None:
            raise RuntimeError(
                f"Supervisor {self.name!r} is {self._state}; {what} needs a running supervisor "
                "(await nursery.start(sup.run) first)."
            )
        self._pending.append(request)
        self._requests_send.send_nowait(request)
        return request.slot

    async def _start_initial(self) -> BaseException | None:
        started: list[_Child] = []
        for child in self._order:
            try:
                await self._spawn(child)
            except Exception as exc:
                exc.add_note(
                    f"while starting child {child.spec.name!r} of supervisor {self.name!r}"
                )
                self._child_crashed(child, _error_text(exc))
                self._finalize(child, "crashed", _error_text(exc))
                await self._shutdown(started, "shutdown")
                return exc
            started.append(child)
        return None

    async def _serve(self, requests: trio.MemoryReceiveChannel[_Request]) -> BaseException | None:
        """The supervisor's loop: one request at a time, so restarts never interleave."""
        while True:
            request = await requests.receive()
            if type(request) is _Exited:
                error = await self._restart_group(request)
                if error is not None:
                    await self._shutdown(self._order, "intensity")
                    return error
            elif type(request) is _GiveUp:
                await self._shutdown(self._order, "intensity")
                return request.error
            elif type(request) is _Stop:
                await self._shutdown(self._order, "shutdown")
                return None
            elif type(request) is _StartChild:
                await self._do_start_child(request)
            elif type(request) is _StopChild:
                await self._do_stop_child(request)
            elif type(request) is _Call:
                await self._do_call(request)

    async def _do_start_child(self, request: _StartChild) -> None:
        self._pending.remove(request)
        spec = request.spec
        existing = self._children.get(spec.name)
        if existing is not None:
            if not existing.stopped:
                request.slot.fail(
                    ValueError(
                        f"Supervisor {self.name!r} already has a running child named "
                        f"{spec.name!r}; stop it first or pick another name."
                    )
                )
                return
            self._order.remove(existing)
            del self._children[spec.name]
        child = self._add(spec)
        try:
            await self._spawn(child)
        except Exception as exc:
            self._child_crashed(child, _error_text(exc))
            self._finalize(child, "crashed", _error_text(exc))
            self._order.remove(child)
            del self._children[spec.name]
            request.slot.fail(exc)
            return
        request.slot.set(None)

    async def _do_stop_child(self, request: _StopChild) -> None:
        self._pending.remove(request)
        child = self._children.get(request.name)
        if child is not None and not child.stopped:
            await self._terminate(child, keep_mailbox=False, reason="stop_child")
        request.slot.set(None)

    # -- children ----------------------------------------------------------

    def _add(self, spec: ChildSpec) -> _Child:
        child = _Child(spec, self._dead_letters, self.max_redeliveries)
        self._children[spec.name] = child
        self._order.append(child)
        return child

    def _child(self, name: str) -> _Child:
        child = self._children.get(name)
        if child is None:
            if self._state == "new":
                raise LookupError(
                    f"Supervisor {self.name!r} has not started yet; "
                    "await nursery.start(sup.run) before asking for refs."
                )
            names = ", ".join(repr(n) for n in self._children) or "none"
            raise LookupError(
                f"Supervisor {self.name!r} has no child named {name!r} (children: {names})."
            )
        return child

    async def _spawn(self, child: _Child) -> None:
        """Start a task for ``child``; return once its ``on_start`` ran (or raise its error)."""
        assert self._nursery is not None
        child.generation += 1
        child.cell.stop_grace_s = child.spec.shutdown_s
        child.terminating = False
        child.stopped = False
        child.done = trio.Event()
        await self._nursery.start(self._child_main, child)

    async def _child_main(self, child: _Child, *, task_status: trio.TaskStatus[None]) -> None:
        """One child's task: run it, and restart it in place while ONE_FOR_ONE allows."""
        status = _Started(self, child, task_status)
        cell = child.cell
        spec = child.spec
        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                while True:
                    error: Exception | None = None
                    try:
                        instance = spec.factory(*spec.args)
                        if isinstance(instance, Supervisor):
                            if spec.max_redeliveries is not None:
                                raise TypeError(
                                    f"ChildSpec {spec.name!r}: max_redeliveries applies to "
                                    "actors, but the factory built a Supervisor (it has no "
                                    "mailbox); pass max_redeliveries to that Supervisor."
                                )
                            await self._run_nested(child, instance, status)
                        elif isinstance(instance, Actor):
                            child.nested = None
                            # run_actor puts it back if on_start fails first.
                            first, has_first = cell.take_front()
                            await run_actor(
                                instance,
                                cell,
                                task_status=status,
                                first_message=first,
                                has_first_message=has_first,
                            )
                        else:
                            raise TypeError(
                                f"ChildSpec {spec.name!r}: factory returned {instance!r}; "
                                "it must return an Actor or a Supervisor."
                            )
                    except Exception as exc:
                        if status.real is not None and not status.called:
                            # A first start failed: nursery.start() reports it.
                            raise
                        error = exc
                    if not status.called and status.real is not None:
                        # Stopped while starting: release nursery.start() anyway.
                        status.real.started()
                    status = _Started(self, child, None)
                    if child.terminating:
                        if error is not None:
                            # It crashed just as it was being stopped: the crash, and the
                            # message that caused it, still count (not "stopped").
                            self._child_crashed(child, _error_text(error))
                        return
                    delay = self._after_exit(child, error)
                    if delay is None:
                        return
                    if delay > 0:
                        await trio.sleep(delay)
                        if cell.closed:
                            # Its ref was stopped while it waited: that is a
                            # normal exit now, decided afresh.
                            cell.mark_stopped()
                            if self._after_exit(child, None) is None:
                                return
        finally:
            child.scope = None
            child.done.set()

    async def _run_nested(self, child: _Child, inner: Supervisor, status: _Started) -> None:
        if inner._owns_dead_letters:
            # The subtree's letters land in the parent's log: one place to look.
            inner._dead_letters = self._dead_letters
        child.nested = inner
        child.cell.state = "starting"
        await inner.run(task_status=status)
        child.cell.state = "stopped"

    def _child_started(self, child: _Child) -> None:
        now = trio.current_time()
        if child.nested is not None:
            child.cell.state = "running"
        pending = child.pending_restart
        if pending is None:
            self._events.emit(ChildStarted(supervisor=self.name, child=child.spec.name, time=now))
            return
        child.pending_restart = None
        child.cell.restarts += 1
        self._restarts += 1
        self._events.emit(
            ChildRestarted(
                supervisor=self.name,
                child=child.spec.name,
                time=now,
                restarts=child.cell.restarts,
                delay_s=pending[0],
                error=pending[1],
            )
        )

    def _child_crashed(self, child: _Child, error: str, now: float | None = None) -> None:
        child.cell.state = "crashed"
        child.cell.last_error = error
        if now is None:
            now = trio.current_time()
        self._events.emit(
            ChildCrashed(supervisor=self.name, child=child.spec.name, time=now, error=error)
        )
        self._note_crash_message(child)

    def _note_crash_message(self, child: _Child) -> None:
        """Dead-letter, or (``max_redeliveries``) redeliver, the message that crashed ``child``.

        Runs before the restart is decided, so whatever the strategy and
        whether or not the child comes back, the message is accounted for once.
        """
        cell = child.cell
        current = cell.current
        if current is None:
            return  # crashed outside a handler (on_start): no message to blame
        cell.current = None
        if type(current) is _Ask:
            # Its asker already has ActorCrashed: no redelivery, no dead letter.
            child.streak_message = None
            return
        if current is child.streak_message and cell.handled == child.streak_handled:
            child.streak += 1  # the redelivered message crashed the new instance too
        else:
            child.streak_message = current
            child.streak = 1
            child.streak_handled = cell.handled
        limit = child.max_redeliveries
        if child.streak > limit:
            child.streak_message = None
            child.streak = 0
            self._dead_letters.record(child.spec.name, current, "poison" if limit else "crashed")
        else:
            # at-least-once, asked for: the restarted actor gets it first.
            child.redelivery_reason = "crashed"
            cell.push_front(current)

    def _after_exit(self, child: _Child, error: Exception | None) -> float | None:
        """Decide, synchronously, what follows a child's exit.

        Returns the backoff delay before an in-place restart (ONE_FOR_ONE), or
        None when this task is done (the child stopped for good, or the loop
        takes over: group restart, giving up, shutting down).
        """
        now = trio.current_time()
        error_text: str | None = None
        if error is not None:
            error_text = _error_text(error)
            self._child_crashed(child, error_text, now)
        cell = child.cell
        crashed = error is not None
        if cell.closed and child.nested is None:
            # Its ref was stopped (maybe while on_stop ran after a crash): a
            # stop is a normal exit, and its waiter must not wait any longer.
            cell.mark_stopped()
            crashed = False
        if not self._accepting_restarts:
            return None  # shutting down or giving up: the loop stops it
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not crashed):
            self._finalize(
                child, "crashed" if crashed else cell.exit_reason or "normal", error_text
            )
            return None
        if self.strategy is not Strategy.ONE_FOR_ONE:
            assert self._requests_send is not None
            self._requests_send.send_nowait(_Exited(child, child.generation, error_text))
            return None
        if not self._intensity.record(
            RestartRecord(child=child.spec.name, time=now, error=error_text)
        ):
            self._give_up()
            return None
        delay = self._backoff_delay(child) if crashed else 0.0
        self._prepare_restart(child, delay, error_text)
        return delay

    def _give_up(self) -> None:
        self._accepting_restarts = False
        assert self._requests_send is not None
        self._requests_send.send_nowait(_GiveUp(self._intensity_error()))

    def _intensity_error(self) -> RestartIntensityExceeded:
        history = self._intensity.window
        last = history[-1]
        cause = f"crashed: {last.error}" if last.error is not None else "exited normally"
        return RestartIntensityExceeded(
            f"Supervisor {self.name!r} gave up: {len(history)} restarts within "
            f"{self.max_seconds!r} s exceed max_restarts={self.max_restarts} "
            f"(last: child {last.child!r} {cause}); all children were stopped.",
            history,
        )

    def _backoff_delay(self, child: _Child) -> float:
        """The backoff before restarting ``child`` after a crash (0.0 without backoff)."""
        if self.backoff is None:
            return 0.0
        cell = child.cell
        if cell.handled != child.backoff_handled:
            child.backoff_attempt = 0  # it did useful work since: a new streak
        assert self._rng is not None
        delay = self.backoff.delay_s(child.backoff_attempt, self._rng.random())
        child.backoff_attempt += 1
        child.backoff_handled = cell.handled
        return delay

    def _prepare_restart(self, child: _Child, delay: float, error: str | None) -> None:
        cell = child.cell
        if cell.closed:
            # Its ref was stopped: a permanent child comes back with a fresh
            # mailbox (what was queued, its head included, is dead already).
            # Wake whoever waits in ref.stop() before the stop event is replaced.
            cell.mark_stopped()
            cell.reopen()
        cell.state = "restarting"
        child.pending_restart = (delay, error)

    def _finalize(self, child: _Child, reason: str, error: str | None = None) -> None:
        """Stop ``child`` for good: dead-letter what it holds, close its mailbox, report."""
        if child.stopped:
            return
        child.stopped = True
        cell = child.cell
        message, had = cell.take_front()
        if had:
            cell.dead_letters.record(cell.name, message, child.redelivery_reason)
        cell.finish("stopped")  # a tell in hand was cancelled from outside: not handled
        cell.report_down(_DOWN_REASONS.get(reason, reason), error)
        if child.generation == 0:
            return  # never started: nothing to report
        self._events.emit(
            ChildStopped(
                supervisor=self.name,
                child=child.spec.name,
                time=trio.current_time(),
                reason=reason,
                error=error,
            )
        )

    async def _terminate(self, child: _Child, *, keep_mailbox: bool, reason: str) -> None:
        """Stop ``child``'s task (running, starting or backing off) and wait for it.

        With ``keep_mailbox`` the child is about to restart: its mailbox and an
        interrupted ``tell`` are kept for the next instance. Otherwise it is
        finalized with ``reason``.
        """
        if child.stopped:
            return  # it exited for good on its own meanwhile
        if not child.done.is_set():
            child.terminating = True
            nested = child.nested
            if nested is not None and nested._state == "running":
                await nested.stop()  # its own children in reverse order, not all at once
            if child.scope is not None:
                child.scope.cancel()
            await child.done.wait()
            cell = child.cell
            current = cell.current
            cell.current = None
            if current is not None and type(current) is not _Ask and not cell.mailbox.has_front:
                child.redelivery_reason = "stopped"
                cell.push_front(current)
        if keep_mailbox:
            child.cell.state = "restarting"
        else:
            self._finalize(child, reason)

    async def _shutdown(self, children: Sequence[_Child], reason: str) -> None:
        self._accepting_restarts = False
        self._state = "stopping"
        for child in reversed(tuple(children)):
            await self._terminate(child, keep_mailbox=False, reason=reason)

    def _members(self, child: _Child) -> list[_Child]:
        live = [c for c in self._order if not c.stopped]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return live
        return live[live.index(child) :]

    async def _restart_group(self, request: _Exited) -> RestartIntensityExceeded | None:
        """ONE_FOR_ALL / REST_FOR_ONE: stop the group (reverse order), restart it (in order)."""
        crashed = request.child
        if request.generation != crashed.generation or crashed.stopped:
            return None  # stale: already restarted along with a sibling
        error_text = request.error
        while True:
            if not self._accepting_restarts:
                return None
            now = trio.current_time()
            record = RestartRecord(child=crashed.spec.name, time=now, error=error_text)
            if not self._intensity.record(record):
                self._accepting_restarts = False
                return self._intensity_error()
            delay = self._backoff_delay(crashed) if error_text is not None else 0.0
            members = self._members(crashed)
            for member in reversed(members):
                if member is not crashed:
                    await self._terminate(member, keep_mailbox=True, reason="shutdown")
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._stop_requested.wait()
                if self._stop_requested.is_set():
                    return None
            failed: tuple[_Child, Exception] | None = None
            for member in members:
                if member.stopped:
                    continue  # it exited for good on its own while the group went down
                if member.spec.restart is Restart.TEMPORARY and member is not crashed:
                    self._finalize(member, "shutdown")
                    continue
                if member.cell.closed and member.spec.restart is Restart.TRANSIENT:
                    # Its ref was stopped while it was down: a normal exit.
                    self._finalize(member, "normal")
                    continue
                if member is crashed:
                    self._prepare_restart(member, delay, error_text)
                else:
                    self._prepare_restart(member, 0.0, None)
                try:
                    await self._spawn(member)
                except Exception as exc:
                    failed = (member, exc)
                    break
            if failed is None:
                return None
            crashed, error = failed
            error_text = _error_text(error)
            self._child_crashed(crashed, error_text)

    def _on_dead_letter(self, letter: DeadLetter) -> None:
        self._events.emit(
            DeadLettered(
                supervisor=self.name,
                child=letter.recipient,
                time=trio.current_time(),
                reason=letter.reason,
                message=letter.message,
            )
        )
