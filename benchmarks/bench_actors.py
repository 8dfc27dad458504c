"""The embedding kernel against raw trio: ask round trips, tell throughput, dynamic children.

Each baseline is raw trio code of the same shape as the flujo_actors figure it is
compared with (the issue's bar: ask <= 1.3x, tell >= 0.8x, start_child per child and
RSS per child reported).
"""

from __future__ import annotations

import time
from functools import partial

import trio

from flujo_actors import Actor, ChildSpec, DynamicSupervisor, Restart, Supervisor
from flujo_actors.bench import Scenario, Target, Workload, expect, workloads

__all__ = ["SCENARIOS"]

MAILBOX_SIZE = 1024


class Echo(Actor):
    """Answers every ask with its message."""

    async def handle(self, message: object) -> object:
        """Echo it."""
        return message


class Idle(Actor):
    """Does nothing: a child that only costs what the kernel costs."""

    async def handle(self, message: object) -> None:
        """Ignore it."""


# -- ask round trip ---------------------------------------------------------------------


def ask_loop(size: int) -> Workload:
    """``size`` asks in a row to one supervised echo actor (ops = round trips)."""

    async def once() -> float:
        supervisor = Supervisor([ChildSpec("echo", Echo, mailbox_size=MAILBOX_SIZE)])
        async with trio.open_nursery() as nursery:
            running = await nursery.start(supervisor.run)
            ref = running.ref("echo")
            began = time.perf_counter()
            last = -1
            for index in range(size):
                last = await ref.ask(index)
            elapsed = time.perf_counter() - began
            await running.stop()
        expect(last == size - 1, f"last reply {last!r}, expected {size - 1}")
        return elapsed

    return Workload(once, ops=size)


class _Slot:
    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: object = None


def raw_request_reply(size: int) -> Workload:
    """A server task reading ``(message, one-shot slot)`` pairs from a 1024-slot memory
    channel and answering through the slot's Event; the client waits on it."""

    async def once() -> float:
        send, receive = trio.open_memory_channel[tuple[object, _Slot]](MAILBOX_SIZE)

        async def serve() -> None:
            async with receive:
                async for message, slot in receive:
                    slot.value = message
                    slot.event.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            began = time.perf_counter()
            last: object = -1
            for index in range(size):
                slot = _Slot()
                await send.send((index, slot))
                await slot.event.wait()
                last = slot.value
            elapsed = time.perf_counter() - began
            await send.aclose()
        expect(last == size - 1, f"last reply {last!r}, expected {size - 1}")
        return elapsed

    return Workload(once, ops=size)


# -- tell throughput --------------------------------------------------------------------


#: ``size`` tells to one supervised actor with a 1024-slot mailbox, until all are handled.
tell_flood = partial(workloads.tell_flood, mailbox_size=MAILBOX_SIZE)


def raw_channel_flood(size: int) -> Workload:
    """``size`` sends into a 1024-slot memory channel read by one counting task."""

    async def once() -> float:
        send, receive = trio.open_memory_channel[int](MAILBOX_SIZE)
        count = [0]
        done = trio.Event()

        async def consume() -> None:
            async with receive:
                async for _ in receive:
                    count[0] += 1
                    if count[0] >= size:
                        done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            began = time.perf_counter()
            for index in range(size):
                await send.send(index)
            await done.wait()
            elapsed = time.perf_counter() - began
            await send.aclose()
        expect(count[0] == size, f"raw consumer counted {count[0]}, expected {size}")
        return elapsed

    return Workload(once, ops=size)


# -- dynamic children -------------------------------------------------------------------


def start_children(size: int) -> Workload:
    """``DynamicSupervisor.start_child()`` ``size`` times (timed), each child an idle actor
    with a 16-slot mailbox; then one stop of them all (not timed)."""

    async def once() -> float:
        dyn = DynamicSupervisor(ChildSpec("idle", Idle, restart=Restart.TEMPORARY, mailbox_size=16))
        async with trio.open_nursery() as nursery:
            await nursery.start(dyn.run)
            began = time.perf_counter()
            for _ in range(size):
                await dyn.start_child()
            elapsed = time.perf_counter() - began
            count = dyn.count_children().active
            await dyn.stop()
        expect(count == size, f"{count} children running, expected {size}")
        return elapsed

    return Workload(once, ops=size)


def raw_start_tasks(size: int) -> Workload:
    """``nursery.start`` of ``size`` tasks, each owning a 16-slot memory channel and
    waiting on it (the bare cost of a task with a mailbox)."""

    async def once() -> float:
        async def child(*, task_status: trio.TaskStatus[trio.MemorySendChannel[int]]) -> None:
            send, receive = trio.open_memory_channel[int](16)
            task_status.started(send)
            async with receive:
                async for _ in receive:
                    pass

        async with trio.open_nursery() as nursery:
            began = time.perf_counter()
            channels = [await nursery.start(child) for _ in range(size)]
            elapsed = time.perf_counter() - began
            for channel in channels:
                await channel.aclose()
        expect(len(channels) == size, f"{len(channels)} tasks started, expected {size}")
        return elapsed

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="actors.ask_round_trip",
        description="N asks in a row to one supervised echo actor (ReplySlot + 1024-slot mailbox).",
        measure=ask_loop,
        baseline=raw_request_reply,
        baseline_label="a server task answering (message, Event slot) pairs from a 1024-slot memory channel",
        unit="us/ask",
        sizes=(10_000,),
        quick_sizes=(2000,),
        targets=(Target(max=1.3, metric="ratio"),),
    ),
    Scenario(
        name="actors.tell_throughput",
        description="N tells to one supervised actor with a 1024-slot mailbox, until all are handled.",
        measure=tell_flood,
        baseline=raw_channel_flood,
        baseline_label="N sends into a 1024-slot memory channel read by one counting task",
        unit="msg/s",
        sizes=(100_000,),
        quick_sizes=(20_000,),
        targets=(Target(min=0.8, metric="ratio"),),
    ),
    Scenario(
        name="actors.dynamic_start_child",
        description="DynamicSupervisor.start_child() N times (idle actors, 16-slot mailboxes); RSS delta / N is the memory per child.",
        measure=start_children,
        baseline=raw_start_tasks,
        baseline_label="nursery.start of N tasks, each owning a 16-slot memory channel",
        unit="us/child",
        sizes=(10_000,),
        quick_sizes=(2000,),
        warmup=False,
    ),
]
