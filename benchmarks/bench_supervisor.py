"""Supervisor restart storm: an actor that crashes on every message, restarted each time."""

from __future__ import annotations

import time

import trio

from flujo_actors import Actor, ActorRef, ChildSpec, Restart, Strategy, Supervisor
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect

__all__ = ["SCENARIOS"]


class Starts:
    """Counts actor starts and signals when ``target`` starts happened."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = trio.Event()

    def started(self) -> None:
        """Record one start."""
        self.count += 1
        if self.count >= self.target:
            self.done.set()


class Crasher(Actor):
    """Raises on every message it handles."""

    def __init__(self, starts: Starts) -> None:
        self._starts = starts

    async def on_start(self) -> None:
        """Count the (re)start."""
        self._starts.started()

    async def handle(self, message: object) -> object:
        """Crash."""
        raise RuntimeError(f"crash on message {message!r}")


async def feed(ref: ActorRef) -> None:
    """Tell numbered messages until cancelled (waits while the mailbox is full)."""
    index = 0
    while True:
        await ref.tell(index)
        index += 1


def storm(size: int) -> Workload:
    """Keep a crashing actor busy until it was restarted ``size`` times.

    Messages are fed until then rather than counted out (each one crashes the actor
    once and is dead-lettered: one message, one restart). The supervisor's start and stop are outside the timed
    part (the workload times itself from the first ``tell`` to the last restart).
    """

    async def once() -> float:
        starts = Starts(size + 1)
        spec = ChildSpec("crasher", Crasher, starts, restart=Restart.PERMANENT)
        supervisor = Supervisor(
            [spec], strategy=Strategy.ONE_FOR_ONE, max_restarts=size * 10, max_seconds=3600.0
        )
        async with trio.open_nursery() as nursery:
            running = await nursery.start(supervisor.run)
            began = time.perf_counter()
            async with trio.open_nursery() as feeding:
                feeding.start_soon(feed, running.ref("crasher"))
                await starts.done.wait()
                feeding.cancel_scope.cancel()
            elapsed = time.perf_counter() - began
            await running.stop()
        expect(starts.count >= size + 1, f"{starts.count - 1} restarts, expected {size}")
        return elapsed

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="supervisor.restart_storm",
        description="An actor that crashes on every message, fed messages until its ONE_FOR_ONE supervisor restarted it N times.",
        measure=storm,
        baseline=baselines.restart_storm,
        baseline_label="a loop re-spawning, in a fresh nursery, a child task that receives a message and raises",
        unit="us/restart",
        sizes=(10_000,),
        quick_sizes=(1000,),
        targets=(Target(max=80.0),),
    ),
]
