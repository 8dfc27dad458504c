"""The governor: one actor per run, the only owner of the run's usage ledger.

Every usage update of a run, from every step and branch at any depth, is a
message to this actor, so concurrent branches never race on the totals. On
a breach the governor records the breaching step, sets the run's
``breach_event`` and cancels the run's scope, which cancels every in-flight
branch beneath it at once.

The governor is an actor like any other, run by the kernel's one actor loop
(:func:`~flujo_actors.actors.run_actor`), on the kernel's
:class:`~flujo_actors.actors.mailbox.BatchingMailbox` rather than a bounded
channel, because a flood of updates from thousands of concurrent branches
must not cost a scheduler round trip per message:

* Senders append to the mailbox's deque: no checkpoint, a tell never blocks.
* *Tallies*: a step's usage that needs no answer is not a message of its own
  (:meth:`Governor.tally`): it is merged into the :class:`Tally` at the
  mailbox's tail (or starts one there), no object and no queue slot. The
  repeated usage of a flood (one cached reading: the same Decimal object)
  is only counted, against the room the tally holds under the limits, so
  an update costs no Decimal arithmetic; other usage is summed. The tally
  stays in arrival order with the other messages, and ``unit * count`` and
  Decimal sums are exact, so the totals are the same as one message per update.
* *Admission* (:meth:`Governor.offer`): the governor keeps the running sum
  of the usage queued but not yet applied (:meth:`Governor.queued_usage`).
  Messages are applied in order, so when ``applied + queued + this`` is
  within every limit the check's answer is already known (no breach) and the
  update is told. Only an update that might breach is asked, and its step
  waits for the verdict before anything after it starts. Without limits
  every update is told.
* *Batching*: told updates wake the governor once per :data:`TELL_BATCH`;
  an ask, a flush or :meth:`Governor.close` wakes it at once. Each turn
  (:meth:`Governor.handle_batch`) applies *every* queued message without a
  checkpoint in between and wakes each asker directly (its message is a
  :class:`~flujo_actors.actors.mailbox.Request` carrying its own reply).

The mailbox is unbounded, but its depth is bounded: an asker has at most one
message in flight, and tells wake the governor every ``TELL_BATCH`` messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .actors.actor import Actor, ActorCell, ActorStatistics, run_actor
from .actors.mailbox import BatchingMailbox
from .errors import ActorStopped, FlujoInternalError
from .governor_messages import Charge, Flush, Release, Reserve, Tally, multiply_usd
from .policy.ledger import Breach, Reservation, UsageLedger
from .results import ZERO, StepResult, add_usd, sub_usd

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable, Sequence
    from decimal import Decimal

    from .actors.deadletters import DeadLetters
    from .actors.registry import Registry
    from .actors.run_supervisor import RunSupervisor
    from .governor_messages import GovernorMessage

__all__ = [
    "TELL_BATCH",
    "Charge",
    "Flush",
    "Governor",
    "GovernorBreach",
    "Release",
    "Reserve",
    "Tally",
]

#: Told messages (no answer awaited) wake the governor only once this many are
#: queued; an ask, a flush or ``close`` wakes it at once. Waking it for every
#: update would cost a task switch per step, and nothing waits on a told one:
#: with limits, only updates that provably cannot breach are told.
TELL_BATCH: Final = 256


@attrs.frozen(slots=True)
class GovernorBreach:
    """What ended a run: the breach, the user-facing message, the breaching step's result.

    ``result`` is None when a reservation was refused (that step never ran).
    """

    breach: Breach
    message: str
    result: StepResult | None


def _fix(breach: Breach, reservation: bool) -> str:
    if reservation:
        expected = "expected_cost_usd" if breach.kind == "cost" else "expected_tokens"
        return f"Raise UsageLimits({breach.limit_name}=...) or lower the step's {expected}."
    return f"Raise UsageLimits({breach.limit_name}=...) or lower the steps' usage."


class Governor(Actor):
    """Owns one run's :class:`UsageLedger`; the only code that mutates its totals.

    Start it with ``await nursery.start(governor.serve)``; talk to it with
    :meth:`offer`, :meth:`tell_nowait` and :meth:`ask`; stop it gracefully
    with :meth:`close` (it applies what is queued, then returns) or by
    cancelling its nursery (askers still waiting get ``ActorStopped``,
    queued tells go to dead letters).

    Args:
        ledger: the run's ledger (with the run's limits).
        breach_event: set on the first breach.
        on_breach: called once, synchronously, on the first breach (the
            runner passes the run scope's ``cancel``).
        dead_letters: where messages sent after the governor stopped go.
        registry: where its cell is entered while it runs (a run's registry).
    """

    name = "governor"

    def __init__(
        self,
        ledger: UsageLedger,
        breach_event: trio.Event,
        on_breach: Callable[[], Any],
        dead_letters: DeadLetters | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.ledger = ledger
        self.breach_event = breach_event
        self.on_breach = on_breach
        self.breached: GovernorBreach | None = None
        #: the longest batch applied in one turn (a throughput diagnostic).
        self.max_batch = 0
        self.mailbox = BatchingMailbox(TELL_BATCH, self._admit)
        self.cell = ActorCell(
            "governor",
            dead_letters=dead_letters,
            mailbox=self.mailbox,
            registry=registry,
            kind="governor",
        )
        self.dead_letters = self.cell.dead_letters
        # Usage queued but not yet applied (see ``offer``); the open tally's
        # units count as its credit (see ``tally``).
        self._queued_cost = ZERO
        self._queued_tokens = 0
        # The tally at the mailbox's tail still counting units of one usage.
        self._open: Tally | None = None
        # Who starts the governor at its first message (see start_lazily).
        self._supervisor: RunSupervisor | None = None

    def start_lazily(self, supervisor: RunSupervisor) -> None:
        """Let ``supervisor`` start the governor when its first message arrives.

        A run without usage never starts it (most runs of plain steps report
        none): until then it sits in its registry as ``"new"``, with an empty
        mailbox. :meth:`close` of a governor that never started just ends it.
        """
        self._supervisor = supervisor
        if self.cell.registry is not None:
            self.cell.registry.add(self.cell)

    def _start(self) -> None:
        supervisor = self._supervisor
        if supervisor is not None:
            self._supervisor = None
            supervisor.start(self.serve, self.cell)

    # -- the mailbox ----------------------------------------------------------
    @property
    def state(self) -> str:
        """``"new"``, ``"starting"``, ``"running"``, ``"crashed"`` or ``"stopped"``."""
        return self.cell.state

    @property
    def handled(self) -> int:
        """Messages applied so far (charges, reservations, releases, flushes)."""
        return self.cell.handled

    def statistics(self) -> ActorStatistics:
        """State, mailbox depth (unbounded mailbox), messages applied (same shape as actors')."""
        return self.cell.statistics()

    def queued_usage(self) -> tuple[Decimal, int]:
        """The cost and tokens reported to the governor but not applied yet (never blocks)."""
        t = self._open
        if t is None:
            return self._queued_cost, self._queued_tokens
        # The open tally is counted as its credit (or, without one, not at all).
        counted = 0 if t.credit is None else t.credit
        return (
            add_usd(self._queued_cost, multiply_usd(t.unit_cost, t.units - counted)),
            self._queued_tokens + t.unit_tokens * (t.units - counted),
        )

    def _seal(self) -> None:
        # The open tally takes no more units: what it holds counts as queued, its
        # unused credit is room again. Done before anything else is queued or applied.
        t = self._open
        assert t is not None
        self._open = None
        counted = 0 if t.credit is None else t.credit
        if t.units != counted:
            self._queued_cost = add_usd(
                self._queued_cost, multiply_usd(t.unit_cost, t.units - counted)
            )
            self._queued_tokens += t.unit_tokens * (t.units - counted)
        t.credit = t.units

    def _admit(self, charge: Charge) -> bool:
        # The mailbox's admission rule: see ``offer``.
        return self._fits(charge.cost, charge.tokens)

    def _fits(self, cost: Decimal, tokens: int) -> bool:
        # Whether usage provably cannot breach (then it counts as queued): see ``offer``.
        ledger = self.ledger
        cost = add_usd(self._queued_cost, cost)
        tokens = self._queued_tokens + tokens
        limit = ledger.cost_limit
        if limit is not None and add_usd(ledger.cost, cost) > limit:
            return False
        limit_t = ledger.token_limit
        if limit_t is not None and ledger.tokens + tokens > limit_t:
            return False
        self._queued_cost = cost
        self._queued_tokens = tokens
        return True

    def offer(self, charge: Charge) -> bool:
        """Queue ``charge`` if it provably cannot breach a limit; False (nothing queued) if it might.

        The governor keeps the running sum of the usage queued but not yet
        applied. Messages are applied in arrival order, so the ledger's
        totals right after this charge is applied will be exactly
        ``applied + queued + this``; when that is within every limit, the
        check's answer is already known ("no breach") and the step need
        not wait for it. Near a limit this returns False and the caller
        asks. Never blocks; not a checkpoint.
        """
        if self._supervisor is not None:
            self._start()
        if self._open is not None:
            self._seal()
        try:
            return self.mailbox.offer(charge)
        except trio.ClosedResourceError:
            self.cell._dead(charge, "stopped")
            return True

    def tally(self, cost: Decimal, tokens: int) -> bool:
        """Queue usage that provably cannot breach a limit; False (nothing queued) if it might.

        The admission rule of :meth:`offer`, without a message per update:
        the usage is merged into the :class:`Tally` at the mailbox's tail (or
        starts one there). Nobody waits for it and no step result goes with
        it (none is needed: it cannot breach). Near a limit this returns
        False and the caller asks with a :class:`Charge`. Never blocks; not
        a checkpoint. Usage tallied after the governor stopped goes to dead
        letters as a one-update tally.

        A tally starts with *credit*: how many updates of its first usage
        fit within the limits (:meth:`UsageLedger.room_for`, counting what is
        queued), held as queued usage. A repeated update of that usage (the
        same Decimal object, as one cached reading gives) is then admitted by
        counting it against the credit, without arithmetic; once the credit
        is spent, one more would breach (nothing else was queued meanwhile),
        so it is refused. Anything else queued behind the tally, or the
        governor taking it, seals it (its unused credit is room again), so
        admission is exactly that of summing every update; another usage
        merged into it is summed.
        """
        if self._supervisor is not None:
            self._start()
        mailbox = self.mailbox
        tail = mailbox.tail()
        t = self._open
        if t is not None and tail is t and cost is t.unit_cost and tokens == t.unit_tokens:
            if t.credit is not None and t.units >= t.credit:
                return False  # its credit was all the room there was: one more breaches
            t.units += 1
            mailbox.merged()
            return True
        if t is not None:
            self._seal()
        if type(tail) is Tally:  # still queued: nothing has been queued behind it
            if not self._fits(cost, tokens):
                return False
            tail.rest_cost = add_usd(tail.rest_cost, cost)
            tail.rest_tokens += tokens
            tail.others += 1
            mailbox.merged()
            return True
        if mailbox.closed:
            self.cell._dead(Tally(cost, tokens), "stopped")
            return True
        credit = self.ledger.room_for(cost, tokens, self._queued_cost, self._queued_tokens)
        if credit is not None:
            if credit < 1:
                return False
            self._queued_cost = add_usd(self._queued_cost, multiply_usd(cost, credit))
            self._queued_tokens += tokens * credit
        self._open = t = Tally(cost, tokens, credit)
        mailbox.put_nowait(t)
        return True

    def _queue(self, message: GovernorMessage) -> None:
        # What every message does before it enters the mailbox (tell_nowait, ask):
        # it starts the governor, it seals the open tally it queues behind, and a
        # Charge counts as queued usage (admission of what follows sees it).
        if self._supervisor is not None:
            self._start()
        if self._open is not None:
            self._seal()
        if type(message) is Charge:
            self._queued_cost = add_usd(self._queued_cost, message.cost)
            self._queued_tokens += message.tokens

    def tell_nowait(self, message: GovernorMessage) -> None:
        """Queue a message without waiting (never blocks, not a checkpoint).

        A message for a stopped governor goes to dead letters (a ``Release``
        is dropped: the ledger it refers to is gone).
        """
        self._queue(message)
        try:
            self.mailbox.put_nowait(message)
        except trio.ClosedResourceError:
            self.cell._dead(message, "stopped")

    async def ask(self, message: GovernorMessage) -> Any:
        """Queue a message and wait for the governor's answer.

        Always a schedule point. If the caller is cancelled while waiting,
        the message is still applied (usage that happened is recorded); only
        the answer is dropped.

        Raises:
            ActorStopped: the governor stopped before answering.
        """
        if self.mailbox.closed:
            raise ActorStopped(f"The run's governor has stopped; {message!r} was not applied.")
        self._queue(message)
        return await self.mailbox.ask(message)

    def close(self) -> None:
        """Stop gracefully: the governor applies every queued message, then returns."""
        self.mailbox.finish()
        if self._supervisor is not None:  # never started: nothing to apply
            self._supervisor = None
            cell = self.cell
            cell.close_mailbox()
            cell.mark_stopped()
            if cell.registry is not None:
                cell.registry.discard(cell)

    async def serve(
        self, *, task_status: trio.TaskStatus[Governor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Apply messages until :meth:`close` (then drain) or cancellation.

        Runs the kernel's actor loop on the governor's batching mailbox. On
        cancellation, askers still waiting get ``ActorStopped`` and queued
        tells go to dead letters. A bug applying a told message crashes it
        (the error propagates; the run fails).
        """
        cell = self.cell
        try:
            await run_actor(self, cell, task_status=task_status, started=self)
        finally:
            if cell.state != "stopped":  # crashed: nothing queued may wait forever
                cell.close_mailbox()
                cell.mark_stopped()

    # -- the Actor interface ----------------------------------------------------
    async def handle(self, message: Any) -> Any:
        """Apply one message; returns None, a Reservation or a Breach."""
        return self._apply(message)

    async def handle_batch(self, messages: Sequence[Any]) -> None:
        """Apply every queued message in one turn, without a checkpoint; wake each asker."""
        batch: deque[GovernorMessage] = messages  # type: ignore[assignment]  # the mailbox's deque
        if len(batch) > self.max_batch:
            self.max_batch = len(batch)
        apply = self._apply
        reschedule = trio.lowlevel.reschedule
        while batch:
            msg = batch.popleft()
            try:
                msg.answer = apply(msg)
            except Exception as exc:
                if msg.waiter is None:  # a teller's bug is ours: crash, stranding nobody
                    for rest in batch:
                        self.cell._dead(rest, "stopped")
                    raise
                msg.error = exc
            waiter = msg.waiter
            if waiter is not None:
                msg.waiter = None
                reschedule(waiter)

    def _apply(self, message: Any) -> Any:
        ledger = self.ledger
        t = type(message)
        if t is Tally:
            if message is self._open:
                self._seal()
            cost, tokens = message.total()
            self._queued_cost = sub_usd(self._queued_cost, cost)
            self._queued_tokens -= tokens
            updates = message.updates
            # The mailbox counted it as one message; it is ``updates`` of them.
            self.cell.handled += updates - 1
            if ledger.charge(cost, tokens, updates) is not None:
                raise FlujoInternalError(
                    f"the governor admitted {message!r} without a check, but it breached "
                    f"(cost {ledger.cost}, tokens {ledger.tokens})"
                )
            return None
        if t is Charge:
            self._queued_cost = sub_usd(self._queued_cost, message.cost)
            self._queued_tokens -= message.tokens
            if message.reservation_id is not None:
                breach = ledger.reconcile(message.reservation_id, message.cost, message.tokens)
            else:
                breach = ledger.charge(message.cost, message.tokens)
            if breach is not None:
                self._breach(
                    breach,
                    f"Usage limit exceeded after step {message.result.name!r}: "
                    f"{breach.describe()}. {_fix(breach, False)}",
                    message.result,
                )
            return breach
        if t is Reserve:
            answer: Reservation | Breach = ledger.reserve(message.cost, message.tokens)
            if type(answer) is Breach:
                self._breach(
                    answer,
                    f"Usage limit would be exceeded: step {message.step_name!r} was not "
                    f"started because {answer.describe()}. {_fix(answer, True)}",
                    None,
                )
            return answer
        if t is Release:
            ledger.release(message.reservation_id)
            return None
        if t is Flush:
            return None
        raise TypeError(f"Governor got an unknown message {message!r}.")

    def _breach(self, breach: Breach, message: str, result: StepResult | None) -> None:
        if self.breached is not None:
            return  # the first breach ends the run; later ones change nothing
        self.breached = GovernorBreach(breach, message, result)
        self.breach_event.set()
        self.on_breach()
