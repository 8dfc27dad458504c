"""The per-run services every frame of a run can reach: :class:`RunState`.

What a run shares across its step actors at every depth: its limits and
governor (built at its first use, :meth:`RunState.open_governor`), the
breach event, dead letters, the registry that snapshots walk, hooks,
executors, and the partial results of steps cut short. The chains of step
actors that use it live in :mod:`.core`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .. import partial
from ..actors.deadletters import DeadLetters
from ..actors.registry import Registry
from ..errors import FlujoInternalError
from ..governor import Charge, Governor, Release, Reserve
from ..limits import UsageLimits
from ..policy.ledger import Reservation
from ..results import ZERO, StepResult
from ..steps.placement import CallSites

if TYPE_CHECKING:
    from decimal import Decimal

    from ..frames import ExecutionFrame
    from ..steps.agent import AgentStep

__all__ = ["RunState", "breached"]


@attrs.define(eq=False)
class RunState:
    """Per-run services every frame can reach (opaque to users)."""

    run_id: str
    resources: Any = None
    limits: UsageLimits | None = None
    governor: Governor | None = None
    limited: bool = False
    breach_event: trio.Event = attrs.Factory(trio.Event)
    dead_letters: DeadLetters = attrs.Factory(DeadLetters)
    #: Every actor of the run while it runs (governor, persistence, step actors at
    #: every depth): what ``Flujo.snapshot()`` walks.
    registry: Registry = attrs.Factory(Registry)
    cache_backend: Any = None
    hooks: Any = None  # a HookDispatcher or None
    executor: Any = None
    #: Where placed and asyncio agent calls go (the runner's ``CALL_SITES``).
    call_sites: CallSites | None = None
    #: What steps cut short by a breach had done, by frame (see :mod:`.partial`).
    partials: dict[int, tuple[Any, StepResult]] = attrs.Factory(dict)
    #: The map steps running, by path: their item counters (see :mod:`.map`), for snapshots.
    live_maps: dict[tuple[str, ...], Any] = attrs.Factory(dict)
    #: Completed positions below the top level (a Positions, with a state backend).
    positions: Any = None
    #: Human inputs: answers brought by a resume, inputs paused for (a HumanState).
    human: Any = None
    #: Whether frames carry their position (checkpoints, human input, idempotency keys).
    track: bool = False
    #: Builds the run's governor when first needed (see :meth:`open_governor`).
    governor_opener: Callable[[], Governor] | None = None

    def open_governor(self) -> Governor | None:
        """The run's governor, built now if this is its first use (None: the run has none).

        A run of plain steps reporting no usage never builds one. Never blocks.
        """
        gov = self.governor
        if gov is None and self.governor_opener is not None:
            gov = self.governor = self.governor_opener()
            self.governor_opener = None
        return gov

    def tally(self, cost: Decimal, tokens: int) -> bool:
        """Tell a step's usage to the governor if it provably cannot breach; never blocks.

        True: it is told (or there is no governor). False: nothing was told,
        the step must :meth:`charge` it (near a limit, or the run breached).
        """
        gov = self.governor or self.open_governor()
        if gov is None:
            return True
        return not self.breach_event.is_set() and gov.tally(cost, tokens)

    async def charge(
        self,
        result: StepResult,
        cost: Decimal,
        tokens: int,
        reservation: int | None = None,
        owner: ExecutionFrame[Any] | None = None,
    ) -> None:
        """Report a step's usage to the run's governor.

        Without limits, or when the governor's mailbox can prove the usage
        cannot breach a limit, the message is told and this returns at once
        (no schedule point). Otherwise it asks and waits for the check, so
        nothing after the step starts before it. If the run has been
        breached (by this charge or another one) it raises
        ``trio.Cancelled``: the governor has cancelled the run's scope. The
        usage is recorded even if the caller is cancelled while waiting, and
        then ``result`` is recorded as what ``owner``'s step did (its usage
        counts, so the partial result of the run must show it).
        """
        gov = self.governor or self.open_governor()
        if gov is None:
            return
        try:
            # tally() queues the update when the governor can prove it cannot breach a
            # limit; otherwise wait for the check before anything after this step starts.
            # A reconciliation is a message of its own (it names its reservation).
            if reservation is not None or not gov.tally(cost, tokens):
                msg = Charge(result, cost, tokens, reservation)
                if not gov.offer(msg):
                    await gov.ask(msg)
            if self.limited and self.breach_event.is_set():
                await breached()
        except BaseException:
            if owner is not None:
                partial.record(self, owner, result)
            raise

    async def reserve(self, step: AgentStep) -> int | None:
        """Reserve a step's expected usage before it starts; the reservation id or None.

        Returns None without limits (nothing to protect). A refused
        reservation is a breach: the governor cancels the run and this
        raises ``trio.Cancelled``, so the step never starts.
        """
        gov = self.governor or self.open_governor()
        if not self.limited or gov is None:
            return None
        cost = step.expected_cost_usd or ZERO
        tokens = step.expected_tokens or 0
        answer = await gov.ask(Reserve(step.name, cost, tokens))
        if type(answer) is Reservation and not self.breach_event.is_set():
            return answer.id
        if type(answer) is Reservation:
            self.release(answer.id)
        await breached()
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self, reservation: int) -> None:
        """Drop a reservation whose step will not report usage (never blocks)."""
        gov = self.governor or self.open_governor()
        if gov is not None:
            gov.tell_nowait(Release(reservation))


async def breached() -> None:
    """Raise ``trio.Cancelled``: the governor cancelled the run's scope on a breach."""
    await trio.lowlevel.checkpoint()
    raise FlujoInternalError("the run's usage limits were breached but its scope was not cancelled")
