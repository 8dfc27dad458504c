"""Mailbox backpressure flood: ``ActorRef.tell`` of N messages through a 16-slot mailbox."""

from __future__ import annotations

import time

import trio

from flujo_actors import Actor, ChildSpec, Supervisor
from flujo_actors.bench import Scenario, Workload, baselines, expect

__all__ = ["SCENARIOS"]

MAILBOX_SIZE = 16


class Tally:
    """Counts handled messages and signals when ``target`` were handled."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = trio.Event()


class Sink(Actor):
    """Counts every message."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    async def handle(self, message: object) -> None:
        """Count it."""
        tally = self._tally
        tally.count += 1
        if tally.count >= tally.target:
            tally.done.set()


def flood(size: int) -> Workload:
    """Tell ``size`` messages to one actor with a small mailbox; time until all are handled."""

    async def once() -> float:
        tally = Tally(size)
        supervisor = Supervisor([ChildSpec("sink", Sink, tally, mailbox_size=MAILBOX_SIZE)])
        async with trio.open_nursery() as nursery:
            running = await nursery.start(supervisor.run)
            ref = running.ref("sink")
            began = time.perf_counter()
            for index in range(size):
                await ref.tell(index)
            await tally.done.wait()
            elapsed = time.perf_counter() - began
            await running.stop()
        expect(tally.count == size, f"{tally.count} messages handled, expected {size}")
        return elapsed

    return Workload(once, ops=size)


def _channel(size: int) -> Workload:
    return baselines.channel_flood(size, buffer=MAILBOX_SIZE)


SCENARIOS = [
    Scenario(
        name="mailbox.flood",
        description=f"N ActorRef.tell calls into one actor with mailbox_size={MAILBOX_SIZE} (the sender waits when it is full).",
        measure=flood,
        baseline=_channel,
        baseline_label=f"N sends through a trio memory channel with a {MAILBOX_SIZE}-slot buffer to one consumer task",
        unit="msg/s",
        sizes=(100_000,),
        quick_sizes=(20_000,),
    ),
]
