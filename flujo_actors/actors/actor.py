"""The actor kernel: mailboxes, the actor loop, ``ActorRef`` and one-shot replies.

An actor is an object whose ``handle`` coroutine is called with one message
at a time, in the order they arrived. Its mailbox is a bounded trio memory
channel owned by an :class:`ActorCell`; the cell outlives any one actor
instance, which is what lets a supervisor restart an actor without losing the
messages queued for it. Actors always run in a nursery their caller owns:
nothing here outlives that nursery.

(Over 500 lines because the cell, the ref and the actor loop share private
state on the hot path: the cell's mailbox, current message and cancel scope
are read by all three without a call in between. The parts that can live
apart already do: mailbox.py, exits.py, monitor.py, deadletters.py,
eventlog.py, opening.py.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs
import trio

from ..errors import ActorCrashed, ActorStopped, AskTimeout, MailboxFull
from .construct import NoPublicConstructor
from .deadletters import DeadLetters
from .exits import ActorDown, ActorExit
from .mailbox import BatchingMailbox, Mailbox, OneShotMailbox, Request, check_capacity
from .registry import KERNEL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from typing import NoReturn

    from .monitor import Monitor
    from .registry import Registry

    AnyMailbox = Mailbox | OneShotMailbox | BatchingMailbox

__all__ = [
    "Actor",
    "ActorCell",
    "ActorRef",
    "ActorStatistics",
    "ReplySlot",
    "run_actor",
    "run_turn",
    "start_actor",
]

#: How long ``on_stop`` may take when the actor is being cancelled.
STOP_GRACE_S: Final = 5.0


class Actor:
    """Base class for actors: subclass it and override :meth:`handle`.

    One message is handled at a time. The return value of :meth:`handle`
    answers an :meth:`ActorRef.ask`; an exception crashes the actor (an asker
    gets :class:`ActorCrashed`; a supervisor may restart the actor with its
    mailbox intact). ``self.name`` is set before :meth:`on_start` runs.
    """

    name: str = ""

    async def on_start(self) -> None:
        """Called once before the first message. Cancellation aborts the start."""

    async def handle(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError(f"{type(self).__name__}.handle is not implemented")

    async def handle_batch(self, messages: Sequence[Any]) -> Sequence[Any] | None:
        """Handle every message queued at once (group commit); override to opt in.

        An actor that overrides this is handed, each turn, everything its
        mailbox holds (at least one message, in arrival order; an ``ask``'s
        message unwrapped) instead of one message per :meth:`handle` call.
        Return one answer per message (an ``ask`` at index i gets the i-th),
        or None (asks get None; messages carrying their own reply, like a
        :class:`~flujo_actors.actors.mailbox.Request`, answer themselves).
        Raising crashes the actor like :meth:`handle` does: every ask of the
        batch gets :class:`ActorCrashed`.
        """
        raise NotImplementedError(f"{type(self).__name__}.handle_batch is not implemented")

    async def on_stop(self) -> None:
        """Called once when the actor stops, crashes or is cancelled.

        It runs shielded for at most the cell's grace (``STOP_GRACE_S``, or
        the child's ``ChildSpec(shutdown_s=...)``), so it can release what it
        holds even while being cancelled; past the grace it is cancelled.
        """

    def exit(self, reason: str = "normal") -> NoReturn:
        """Stop this actor from inside ``on_start`` or ``handle``: raises :class:`ActorExit`.

        ``"normal"`` and ``"shutdown"`` are normal exits (no restart for
        TRANSIENT children); any other reason is a crash.
        """
        raise ActorExit(reason)


@attrs.frozen(kw_only=True)
class ActorStatistics:
    """A point-in-time view of one actor (see :meth:`ActorRef.statistics`)."""

    name: str
    state: str
    mailbox_depth: int
    mailbox_capacity: int | float
    handled: int
    restarts: int
    last_error: str | None


class ReplySlot:
    """A one-shot reply slot for ``ask``: one Event, no channel per call.

    ``abandoned`` is set by an asker that stopped waiting (timeout or
    cancellation); a reply set after that is refused and goes to dead letters.
    """

    __slots__ = ("_error", "_event", "_value", "abandoned")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.abandoned = False

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: Any) -> bool:
        """Deliver the reply; False if nobody waits for it any more."""
        if self.abandoned or self._event.is_set():
            return False
        self._value = value
        self._event.set()
        return True

    def fail(self, error: BaseException) -> bool:
        """Deliver an error instead of a reply; False if nobody waits."""
        if self.abandoned or self._event.is_set():
            return False
        self._error = error
        self._event.set()
        return True

    async def wait(self) -> Any:
        """Wait for the reply; raise the delivered error if any.

        Always a schedule point. Cancellation while waiting abandons the reply,
        but a reply that has already arrived is returned even if the caller
        was cancelled meanwhile: it would otherwise be lost.
        """
        if self._event.is_set():
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


class _Ask:
    """Envelope of an ``ask``: the message and where its reply goes."""

    __slots__ = ("message", "slot")

    def __init__(self, message: Any, slot: ReplySlot) -> None:
        self.message = message
        self.slot = slot


class ActorCell:
    """The part of an actor that survives restarts: name, mailbox, counters.

    Args:
        name: the actor's name (used in errors and dead letters).
        mailbox_size: capacity of the bounded mailbox (``math.inf`` for unbounded,
            which gives up backpressure: use with care).
        dead_letters: where undeliverable messages go (a fresh log if None).
    """

    # Slotted: a run creates one cell per step it executes (allocation is on the hot path).
    __slots__ = (
        "_active",
        "_cancel_scope",
        "_injected",
        "_monitors",
        "_ref",
        "_stopped",
        "cancellable",
        "current",
        "dead_letters",
        "down",
        "exit_reason",
        "handled",
        "instance",
        "kind",
        "last_error",
        "mailbox",
        "name",
        "path",
        "registry",
        "restarts",
        "state",
        "stop_grace_s",
        "supervised",
        "task",
    )

    def __init__(
        self,
        name: str,
        mailbox_size: int | float = 1024,
        dead_letters: DeadLetters | None = None,
        *,
        mailbox: AnyMailbox | None = None,
        registry: Registry | None = None,
        kind: str = "actor",
        path: tuple[str, ...] = (),
    ) -> None:
        if not name:
            raise ValueError("Actor name must be a non-empty string, got ''.")
        if mailbox is None:
            check_capacity(name, mailbox_size)
            mailbox = Mailbox(mailbox_size)
        self.name = name
        self.mailbox: AnyMailbox = mailbox
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetters()
        #: what the registry and snapshots call it ("actor", "step", "governor", ...).
        self.kind = kind
        #: for step actors, the step's path in the pipeline tree.
        self.path = path
        #: the registry the actor's loop enters it in while it runs (None: the kernel's).
        self.registry = registry
        #: the task running the actor's loop (set when it starts).
        self.task: trio.lowlevel.Task | None = None
        self.state = "new"
        self.handled = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.current: Any = None
        self.instance: Actor | None = None
        #: How long on_stop may run (a supervisor sets ChildSpec.shutdown_s).
        self.stop_grace_s: float = STOP_GRACE_S
        #: Why the last run ended without a crash ("normal", "shutdown", "cancelled").
        self.exit_reason: str | None = None
        # Set once the actor is down for good: (reason, error); see report_down.
        self.down: tuple[str, str | None] | None = None
        self._monitors: list[Monitor] | None = None
        # An error to raise in the running actor (see crash()).
        self._injected: Exception | None = None
        #: Set by a supervisor: a cancelled run then keeps the mailbox (the
        #: supervisor decides whether the actor restarts or stops for good).
        self.supervised = False
        #: False for actors stopped only by their nursery (the runtime's step
        #: actors): the loop then opens no cancel scope of its own, so
        #: ``crash()`` and ``ref.stop()`` cannot interrupt them.
        self.cancellable = True
        # True while run_actor runs an instance on this cell (on_stop included).
        self._active = False
        self._stopped: trio.Event | None = None
        self._cancel_scope: trio.CancelScope | None = None
        # Made on first use: a step actor's cell is created per step and rarely addressed.
        self._ref: ActorRef | None = None

    @property
    def ref(self) -> ActorRef:
        """The cell's address (one per cell: refs compare by identity)."""
        ref = self._ref
        if ref is None:
            ref = self._ref = ActorRef._create(self)
        return ref

    @property
    def capacity(self) -> int | float:
        return self.mailbox.capacity

    @property
    def closed(self) -> bool:
        return self.mailbox.closed

    @property
    def send(self) -> trio.MemorySendChannel[Any]:
        """The send side of a channel mailbox (:class:`Mailbox` only)."""
        mailbox = self.mailbox
        assert type(mailbox) is Mailbox
        return mailbox.send

    @property
    def receive(self) -> trio.MemoryReceiveChannel[Any]:
        """The receive side of a channel mailbox (:class:`Mailbox` only)."""
        mailbox = self.mailbox
        assert type(mailbox) is Mailbox
        return mailbox.receive

    # -- shutdown ---------------------------------------------------------
    def close_mailbox(self, reason: str = "stopped") -> None:
        """Refuse new messages and move queued ones to dead letters.

        A queued ``ask`` is answered with :class:`ActorStopped`.
        """
        for message in self.mailbox.close():
            self._dead(message, reason)

    def push_front(self, message: Any) -> None:
        """Put ``message`` back at the head of the mailbox, for the next ``run_actor``.

        A supervisor uses this to hand a restarted actor the message its
        predecessor was handling. At most one message waits there; on a
        closed mailbox it goes straight to dead letters (``"stopped"``).
        """
        if self.mailbox.closed:
            self._dead(message, "stopped")
            return
        self.mailbox.push_front(message)

    def take_front(self) -> tuple[Any, bool]:
        """Remove and return ``(message, True)`` from the head slot, or ``(None, False)``."""
        return self.mailbox.take_front()

    def reopen(self) -> None:
        """Give a stopped cell a fresh, empty mailbox (same name, same refs).

        Used by a supervisor to restart a permanent actor that stopped
        normally: refs to the cell stay valid and new messages are accepted
        again. Letters already dead-lettered stay dead.
        """
        self.mailbox.reopen()
        self.current = None
        self.state = "new"
        self._stopped = None

    def _dead(self, msg: Any, reason: str) -> None:
        if type(msg) is _Ask:
            msg.slot.fail(ActorStopped(f"Actor {self.name!r} stopped before answering."))
            msg = msg.message
        elif isinstance(msg, Request):
            if msg.fail(ActorStopped(f"Actor {self.name!r} stopped before answering {msg!r}.")):
                return  # its asker holds the error
            if not msg.DEAD_LETTER:
                return
        self.dead_letters.record(self.name, msg, reason)

    def finish(self, current_reason: str) -> None:
        """Stop the cell for good: dead-letter the ``tell`` being handled, close, mark stopped.

        ``current_reason`` is the dead-letter reason of the message in
        ``current`` (an ``ask`` there is skipped: its asker holds the
        error). The queued messages go to dead letters as ``"stopped"``.
        """
        current = self.current
        self.current = None
        if current is not None and type(current) is not _Ask:
            self.dead_letters.record(self.name, current, current_reason)
        self.close_mailbox()
        self.mark_stopped()

    def mark_stopped(self) -> None:
        if not self.supervised:
            # Unsupervised: stopped is down for good (a supervisor reports its own).
            if self.state == "crashed":
                self.report_down("crashed", self.last_error)
            else:
                self.report_down(self.exit_reason or "normal")
        self.state = "stopped"
        if self._stopped is not None:
            self._stopped.set()

    # -- monitors and crashes on purpose ----------------------------------
    def report_down(self, reason: str, error: str | None = None) -> None:
        """Record that the actor stopped for good and tell its monitors (once)."""
        if self.down is not None:
            return
        self.down = (reason, error)
        monitors = self._monitors
        if monitors:
            notice = ActorDown(self.name, reason, error)
            for monitor in tuple(monitors):
                monitor._fire(notice)

    def add_monitor(self, monitor: Monitor) -> None:
        if self.down is not None:
            monitor._fire(ActorDown(self.name, *self.down))
        if self._monitors is None:
            self._monitors = []
        self._monitors.append(monitor)

    def remove_monitor(self, monitor: Monitor) -> None:
        if self._monitors is not None and monitor in self._monitors:
            self._monitors.remove(monitor)

    def crash(self, error: Exception) -> None:
        """Make the running actor crash with ``error`` now, as if ``handle`` had raised it.

        Whatever it was doing (handling a message, waiting for one, starting)
        is cancelled; an ``ask`` being handled gets ``ActorCrashed``. For tests
        and for killing a stuck actor; a supervisor then treats it as a crash.

        Raises:
            RuntimeError: the actor is not running (not started, stopping or stopped).
        """
        if not isinstance(error, Exception):
            raise TypeError(f"Actor {self.name!r}: crash() needs an Exception, got {error!r}.")
        scope = self._cancel_scope
        if not self._active or scope is None or self.state == "stopping":
            raise RuntimeError(
                f"Actor {self.name!r} is {self.state}, not running; only a running actor "
                "can be crashed (start it first, or wait for its restart)."
            )
        self._injected = error
        scope.cancel()

    async def wait_stopped(self) -> None:
        """Block until the actor has stopped (its ``on_stop`` ran)."""
        if self.state == "stopped":
            await trio.lowlevel.checkpoint()
            return
        if self._stopped is None:
            self._stopped = trio.Event()
        await self._stopped.wait()

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            name=self.name,
            state=self.state,
            mailbox_depth=self.mailbox.depth,
            mailbox_capacity=self.capacity,
            handled=self.handled,
            restarts=self.restarts,
            last_error=self.last_error,
        )


class ActorRef(metaclass=NoPublicConstructor):
    """The address of an actor: the only way to talk to it.

    Refs are cheap, hashable by identity, and stay valid across restarts.
    There is no public constructor: :func:`start_actor`, :func:`open_actor`
    and a supervisor's ``ref(name)`` hand them out.
    """

    __slots__ = ("_cell",)
    _FACTORY: ClassVar[str] = "start_actor(...), open_actor(...) or a supervisor's ref(name)"

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def cell(self) -> ActorCell:
        return self._cell

    @property
    def dead_letters(self) -> DeadLetters:
        return self._cell.dead_letters

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.name!r} ({self._cell.state})>"

    async def tell(self, message: Any) -> None:
        """Send a message, waiting while the mailbox is full (backpressure).

        A message for a stopped actor goes to dead letters. Cancellation while
        waiting for room means the message was not sent.
        """
        try:
            await self._cell.mailbox.put(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._cell._dead(message, "stopped")

    def tell_nowait(self, message: Any) -> None:
        """Send without waiting.

        Raises:
            MailboxFull: the mailbox is at capacity; nothing was sent.
        """
        try:
            self._cell.mailbox.put_nowait(message)
        except trio.WouldBlock:
            raise MailboxFull(
                f"Mailbox of actor {self._cell.name!r} is full "
                f"(mailbox_size={self._cell.capacity!r}); use `await ref.tell(...)` to "
                "wait for room, or enlarge mailbox_size."
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._cell._dead(message, "stopped")

    async def ask(self, message: Any, *, timeout_s: float | None = None) -> Any:
        """Send a message and wait for the handler's return value.

        Raises:
            ActorCrashed: the handler raised (the cause is chained).
            ActorStopped: the actor stopped before answering (or was stopped).
            AskTimeout: no reply within ``timeout_s``; a later reply goes to
                dead letters and does not affect the actor.

        Cancellation abandons the reply the same way a timeout does.
        """
        slot = ReplySlot()
        envelope = _Ask(message, slot)
        cell = self._cell
        if timeout_s is None:
            try:
                await self.tell(envelope)
                return await slot.wait()
            finally:
                slot.abandoned = True
        # The timeout covers waiting for mailbox room too: an ask must not
        # outlive its deadline just because the actor is backed up.
        with trio.move_on_after(timeout_s):
            try:
                await self.tell(envelope)
                return await slot.wait()
            finally:
                slot.abandoned = True
        raise AskTimeout(
            f"Actor {cell.name!r} did not answer within {timeout_s!r} s "
            f"(message {message!r}); raise timeout_s or check the actor's load."
        )

    async def stop(self) -> None:
        """Stop the actor and wait until it has stopped.

        Its current handler is cancelled, the message it was handling and the
        queued messages go to dead letters (asks among them get
        :class:`ActorStopped`) and ``on_stop`` runs. Cancelling the caller
        only stops the waiting: the actor still stops.
        """
        cell = self._cell
        if not cell._active:
            # Nothing runs on the cell (never started, stopped, or a supervised
            # actor waiting to be restarted): stopping it is immediate.
            cell.close_mailbox()
            cell.mark_stopped()
            return
        cell.state = "stopping"
        cell.close_mailbox()
        if cell._cancel_scope is not None:
            cell._cancel_scope.cancel()
        await cell.wait_stopped()

    def statistics(self) -> ActorStatistics:
        """State, mailbox depth/capacity, messages handled, restarts, last error."""
        return self._cell.statistics()

    def monitor(self) -> Monitor:
        """Watch this actor: ``async with ref.monitor() as down: await down.wait()``.

        The monitor reports an :class:`~flujo_actors.actors.ActorDown` once the
        actor stops for good (never for a restart), at once if it is down
        already. See :mod:`flujo_actors.actors.monitor`.
        """
        from .monitor import Monitor  # loads on first use: the runtime never monitors

        return Monitor._create(self._cell)


async def run_actor(
    actor: Actor,
    cell: ActorCell,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    first_message: Any = None,
    has_first_message: bool = False,
    started: Any = None,
) -> None:
    """The actor loop: run ``actor`` on ``cell``'s mailbox until it stops, crashes or is cancelled.

    Every actor runs on this loop: user actors and supervised children, the
    runtime's step actors (one per step position, fed ExecutionFrames),
    the governor and the persistence actor (both through
    :meth:`Actor.handle_batch`, on a batching mailbox).

    ``task_status.started(started or ref)`` is called once ``on_start``
    returned. A crash re-raises the handler's exception after ``on_stop`` (a
    supervisor decides what happens next; the mailbox is kept, and
    ``cell.current`` still holds the message that crashed it). A normal stop
    (mailbox finished and drained, or :meth:`ActorRef.stop`) returns.
    Cancellation propagates after ``on_stop`` ran shielded; the mailbox is
    then closed (queued messages go to dead letters) unless the cell is
    ``supervised``, in which case the supervisor decides.

    ``first_message`` lets a caller start an actor with its first message
    in hand (no mailbox round trip), which is how a reused step actor avoids
    a channel hop for its first frame, and how a supervisor hands a
    restarted actor the message its predecessor was handling.

    While it runs, the actor is entered in ``cell.registry`` (the kernel's
    :data:`~flujo_actors.actors.registry.KERNEL` if None), which is what
    :mod:`flujo_actors.introspection` walks.
    """
    actor.name = cell.name
    cell.instance = actor
    cell.current = None
    cell.exit_reason = None
    cell._active = True
    cell.task = trio.lowlevel.current_task()
    registry = cell.registry if cell.registry is not None else KERNEL
    registry.add(cell)
    try:
        await _run_actor(actor, cell, task_status, first_message, has_first_message, started)
    finally:
        cell._active = False
        registry.discard(cell)


class _NoScope:
    """Stands in for the loop's cancel scope when the cell is not ``cancellable``."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SCOPE: Final = _NoScope()


async def _run_actor(
    actor: Actor,
    cell: ActorCell,
    task_status: trio.TaskStatus[Any],
    first_message: Any,
    has_first_message: bool,
    started: Any,
) -> None:
    crashed: BaseException | None = None
    # The first message is ours only once it is in the handler's hands; if
    # on_start fails or is cancelled first, it goes back to the mailbox's head.
    first_pending = has_first_message
    actor_type = type(actor)
    scope = trio.CancelScope() if cell.cancellable else None
    with scope if scope is not None else _NO_SCOPE:
        cell._cancel_scope = scope
        cell.state = "starting"
        try:
            if actor_type.on_start is not _BASE_ON_START:
                await actor.on_start()
            cell.state = "running"
            task_status.started(cell.ref if started is None else started)
            mailbox = cell.mailbox
            if actor_type.handle_batch is not _BASE_HANDLE_BATCH:
                if has_first_message:
                    first_pending = False
                    mailbox.push_front(first_message)
                while True:
                    try:
                        batch = await mailbox.get_batch()
                    except trio.EndOfChannel:
                        return
                    await _handle_batch(actor, cell, batch)
            handle = actor.handle
            msg = first_message
            if not has_first_message:
                try:
                    msg = await mailbox.get()
                except trio.EndOfChannel:
                    return
            first_pending = False
            while True:
                await _handle_one(handle, cell, msg)
                # Only the mailbox's own end-of-channel is a normal stop; an
                # EndOfChannel escaping ``handle`` is a crash like any other.
                try:
                    msg = await mailbox.get()
                except trio.EndOfChannel:
                    return
        except ActorExit as exc:
            if exc.is_crash:
                crashed = exc
                cell.last_error = f"{type(exc).__name__}: {exc}"
                cell.state = "crashed"
                raise
            # A chosen exit: the message that asked for it was handled, and
            # the rest of the mailbox dies with the actor (OTP's stop).
            if cell.current is not None:
                cell.handled += 1
                cell.current = None
            cell.exit_reason = exc.reason
            cell.close_mailbox()
        except Exception as exc:
            crashed = exc
            cell.last_error = f"{type(exc).__name__}: {exc}"
            cell.state = "crashed"
            raise
        except trio.Cancelled:
            injected = cell._injected
            if injected is None:
                if cell.state != "stopping":
                    cell.exit_reason = "cancelled"
                raise
            # crash(): our own scope was cancelled to deliver it; it is raised
            # below, once the scope has caught its Cancelled.
            cell._injected = None
            crashed = injected
            cell.last_error = f"{type(injected).__name__}: {injected}"
            cell.state = "crashed"
            current = cell.current
            if type(current) is _Ask:
                current.slot.fail(_crashed(cell.name, injected))
            raise
        finally:
            if first_pending:
                cell.push_front(first_message)
            current = cell.current
            if type(current) is _Ask and not current.slot.done:
                current.slot.fail(ActorStopped(f"Actor {cell.name!r} stopped before answering."))
            cell._cancel_scope = None
            # A shielded scope costs more than the rest of a restart: skip it
            # when on_stop is the base class's no-op.
            if actor_type.on_stop is not _BASE_ON_STOP:
                with trio.CancelScope(shield=True) as shield:
                    shield.deadline = trio.current_time() + cell.stop_grace_s
                    await actor.on_stop()
            if crashed is None and (cell.closed or not cell.supervised):
                cell.current = None
                if current is not None and type(current) is not _Ask and cell.cancellable:
                    # Its handler was cut short: it was not handled, so it must
                    # not vanish (an interrupted ask got ActorStopped above). A
                    # step actor's cut-short frame is accounted in the run's
                    # partial results instead (see flujo_actors.partial).
                    cell.dead_letters.record(cell.name, current, "stopped")
                cell.close_mailbox()
                cell.mark_stopped()
    if crashed is not None:
        raise crashed  # only crash() gets here: its Cancelled was caught by our scope


async def _handle_one(handle: Callable[[Any], Awaitable[Any]], cell: ActorCell, msg: Any) -> Any:
    """One message, one turn: hand it to ``handle``, answer an ask, count it.

    Returns the handler's value. A handler's exception propagates (the
    caller's loop records the crash); an asker gets ``ActorCrashed`` first.
    """
    cell.current = msg
    if type(msg) is _Ask:
        try:
            value = await handle(msg.message)
        except Exception as exc:
            msg.slot.fail(_ask_error(cell.name, exc))
            raise
        if not msg.slot.set(value):
            cell.dead_letters.record(cell.name, value, "late-reply")
    else:
        value = await handle(msg)
    cell.handled += 1
    cell.current = None
    return value


async def run_turn(actor: Actor, cell: ActorCell) -> Any:
    """Run one turn of ``actor``'s loop on the caller's task: its next queued message.

    The sender-driven form of the actor loop, for actors that need no task of
    their own because whoever sends them a message waits for it to be handled
    anyway: the runtime's step actors. A chain puts a step's
    ``ExecutionFrame`` in the step actor's mailbox, then runs the actor's
    turn; the turn's value (the next step's actor, whose mailbox now holds
    the next frame) says whose turn comes next. Spawning a task per step
    would cost more than a trivial step.

    The message is handled exactly as :func:`run_actor` handles it
    (statistics, asks answered); a one-shot mailbox's actor leaves its
    registry once its turn ends. A handler's exception propagates, recorded
    as the cell's ``last_error`` (the caller's nursery decides what
    happens). Cancellation propagates; the interrupted frame is accounted
    by the run's partial results, not dead-lettered.

    Raises:
        trio.WouldBlock: the mailbox is empty (nobody sent this actor a message).
    """
    mailbox = cell.mailbox
    msg = mailbox.get_nowait()
    cell.state = "running"
    try:
        if type(msg) is _Ask:
            value = await _handle_one(actor.handle, cell, msg)
        else:
            # _handle_one's plain-message path, inline: one coroutine less per step.
            cell.current = msg
            value = await actor.handle(msg)
            cell.handled += 1
    except Exception as exc:
        cell.last_error = f"{type(exc).__name__}: {exc}"
        cell.state = "crashed"
        raise
    finally:
        cell.current = None
        if mailbox.closed and not mailbox.depth:
            if cell.state != "crashed":
                cell.state = "stopped"
            registry = cell.registry
            if registry is not None:
                registry.discard(cell)
    if cell.state == "running":
        cell.state = "idle"
    return value


async def _handle_batch(actor: Actor, cell: ActorCell, batch: Sequence[Any]) -> None:
    """One turn of a batching actor: the whole batch to ``handle_batch``, asks answered."""
    size = len(batch)  # the handler may consume the batch (the governor pops its deque)
    asks = [m for m in batch if type(m) is _Ask]
    messages = [m.message if type(m) is _Ask else m for m in batch] if asks else batch
    try:
        answers = await actor.handle_batch(messages)
    except Exception as exc:
        for ask in asks:
            ask.slot.fail(_ask_error(cell.name, exc))
        raise
    if asks:
        replies = answers if answers is not None else [None] * size
        for msg, answer in zip(batch, replies, strict=True):
            if type(msg) is _Ask and not msg.slot.set(answer):
                cell.dead_letters.record(cell.name, answer, "late-reply")
    cell.handled += size


_BASE_ON_STOP: Final = Actor.on_stop
_BASE_ON_START: Final = Actor.on_start
_BASE_HANDLE_BATCH: Final = Actor.handle_batch


def _ask_error(name: str, exc: Exception) -> Exception:
    if type(exc) is ActorExit and not exc.is_crash:
        return ActorStopped(f"Actor {name!r} stopped ({exc.reason}) before answering.")
    return _crashed(name, exc)


def _crashed(name: str, exc: Exception) -> ActorCrashed:
    err = ActorCrashed(
        f"Actor {name!r} crashed handling the message: {type(exc).__name__}: {exc}",
        actor=name,
        cause=exc,
    )
    err.__cause__ = exc
    return err


async def start_actor(
    nursery: trio.Nursery,
    actor: Actor,
    *,
    name: str,
    mailbox_size: int | float = 1024,
    dead_letters: DeadLetters | None = None,
) -> ActorRef:
    """Start ``actor`` in ``nursery``; return its ref once ``on_start`` ran.

    The actor lives until it is stopped, crashes (the error propagates into
    ``nursery``; use a :class:`~flujo_actors.Supervisor` to restart it) or the
    nursery is cancelled. When it crashes, the ``tell`` it was handling goes to
    dead letters (``"crashed"``) and the queued messages too (``"stopped"``).
    """
    cell = ActorCell(name, mailbox_size, dead_letters)
    ref: ActorRef = await nursery.start(_run_unsupervised, actor, cell)
    return ref


async def _run_unsupervised(
    actor: Actor, cell: ActorCell, *, task_status: trio.TaskStatus[ActorRef]
) -> None:
    try:
        await run_actor(actor, cell, task_status=task_status)
    finally:
        # Unsupervised: nobody will restart it, so nothing may stay queued.
        if cell.state != "stopped":
            cell.finish("crashed")  # the tell in hand crashed it
