"""Raw-trio baselines: the closest plain trio program of each scenario's shape.

Each function is a workload factory (size -> :class:`Workload`, or an async context
manager of one). They use nothing from flujo_actors, so the ratio figure/baseline says
what the runtime costs over hand-written trio doing the same work: one task per step
or branch, values handed over memory channels, the same trivial coroutine as the
agent. Every call checks its own result.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import trio

from .harness import Workload, expect

__all__ = [
    "cached_chain",
    "chain",
    "channel_flood",
    "fanout",
    "ledger_flood",
    "request_loop",
    "restart_storm",
    "retry_chain",
    "router",
    "sqlite_chain",
    "stream",
    "trivial",
]


async def trivial(value: int) -> int:
    """The trivial agent every baseline (and most scenarios) awaits: ``value + 1``."""
    return value + 1


Send = trio.MemorySendChannel[int]
Receive = trio.MemoryReceiveChannel[int]
StageFn = Callable[[int, int], Awaitable[int]]


async def _stage(index: int, receive: Receive, send: Send, work: StageFn) -> None:
    value = await receive.receive()
    await send.send(await work(index, value))


async def _run_chain(size: int, value: int, work: StageFn) -> int:
    # One task per step, spawned per run, values handed over unbuffered channels:
    # the shape of a run whose step actors live in the run's nursery.
    async with trio.open_nursery() as nursery:
        first_send, receive = trio.open_memory_channel[int](0)
        for index in range(size):
            send, next_receive = trio.open_memory_channel[int](0)
            nursery.start_soon(_stage, index, receive, send, work)
            receive = next_receive
        await first_send.send(value)
        return await receive.receive()


async def _trivial_stage(_index: int, value: int) -> int:
    return await trivial(value)


def chain(size: int) -> Workload:
    """``size`` tasks in a row, each receiving the value over a memory channel,
    awaiting :func:`trivial` and sending the result on (one run; ops = steps)."""

    async def once() -> None:
        out = await _run_chain(size, 0, _trivial_stage)
        expect(out == size, f"raw chain returned {out}, expected {size}")

    return Workload(once, ops=size)


def retry_chain(size: int, *, failures: int = 2) -> Workload:
    """One task per step as in :func:`chain`, whose agent fails ``failures`` times per
    step before succeeding, retried in a try/except loop (ops = steps)."""

    async def once() -> None:
        async def flaky(_index: int, value: int) -> int:
            for attempt in range(failures + 1):
                try:
                    if attempt < failures:
                        raise RuntimeError("transient")
                    return await trivial(value)
                except RuntimeError:
                    continue
            raise AssertionError("unreachable")

        out = await _run_chain(size, 0, flaky)
        expect(out == size, f"raw retry chain returned {out}, expected {size}")

    return Workload(once, ops=size)


def cached_chain(size: int, *, hit: bool) -> Workload:
    """:func:`chain` where each step first looks its (step, input) up in a 1,024-entry
    LRU dict. ``hit=True`` repeats one input (all hits after the warm-up); ``False``
    uses a new input per call (all misses)."""
    cache: OrderedDict[tuple[int, int], int] = OrderedDict()
    counter = [0]

    async def cached(index: int, value: int) -> int:
        key = (index, value)
        found = cache.get(key)
        if found is not None:
            cache.move_to_end(key)
            return found
        result = await trivial(value)
        cache[key] = result
        if len(cache) > 1024:
            cache.popitem(last=False)
        return result

    async def once() -> None:
        start = 0 if hit else counter[0] * (size + 1)
        counter[0] += 1
        out = await _run_chain(size, start, cached)
        expect(out == start + size, f"raw cached chain returned {out}, expected {start + size}")

    return Workload(once, ops=size)


@asynccontextmanager
async def sqlite_chain(size: int) -> AsyncIterator[Workload]:
    """:func:`chain` plus persistence: each step appends a row, and the run commits
    all its rows to a temporary SQLite file in one transaction in a worker thread
    (group commit, the best case of the shape)."""
    with tempfile.TemporaryDirectory(prefix="flujo-bench-") as tmp:
        db = sqlite3.connect(Path(tmp) / "raw.sqlite", check_same_thread=False)
        try:
            db.execute("CREATE TABLE steps (run INTEGER, step INTEGER, output TEXT)")
            runs = [0]

            async def once() -> None:
                rows: list[tuple[int, int, str]] = []
                run = runs[0]
                runs[0] += 1

                async def persisted(index: int, value: int) -> int:
                    out = await trivial(value)
                    rows.append((run, index, str(out)))
                    return out

                out = await _run_chain(size, 0, persisted)

                def commit() -> None:
                    with db:
                        db.executemany("INSERT INTO steps VALUES (?, ?, ?)", rows)

                await trio.to_thread.run_sync(commit)
                expect(out == size and len(rows) == size, "raw sqlite chain lost rows")

            yield Workload(once, ops=size)
        finally:
            db.close()


def fanout(size: int, *, merge: bool) -> Workload:
    """``size`` tasks started in one nursery, each awaiting :func:`trivial` and storing
    its output in a dict (ops = branches). With ``merge``, each branch also works on
    its own copy of a context dict and writes one key, and the copies' changed keys are
    merged back in declaration order (the shape of CONTEXT_UPDATE)."""

    async def once() -> None:
        outputs: dict[int, int] = {}
        context: dict[str, int] = {}
        changes: list[dict[str, int] | None] = [None] * size

        async def branch(index: int) -> None:
            value = await trivial(index)
            if merge:
                own = dict(context)
                own[f"b{index}"] = value
                changes[index] = {k: v for k, v in own.items() if context.get(k) != v}
            outputs[index] = value

        async with trio.open_nursery() as nursery:
            for index in range(size):
                nursery.start_soon(branch, index)
        if merge:
            for changed in changes:
                if changed:
                    context.update(changed)
            expect(len(context) == size, f"raw merge kept {len(context)} keys, expected {size}")
        expect(
            len(outputs) == size, f"raw fan-out produced {len(outputs)} outputs, expected {size}"
        )

    return Workload(once, ops=size)


async def _serve(receive: Receive, send: Send) -> None:
    async with receive, send:
        async for value in receive:
            await send.send(await trivial(value))


def request_loop(size: int) -> Workload:
    """A body task serving ``size`` requests in a row: each iteration sends the value
    over a memory channel and waits for the reply (ops = iterations)."""

    async def once() -> None:
        request_send, request_receive = trio.open_memory_channel[int](0)
        reply_send, reply_receive = trio.open_memory_channel[int](0)
        value = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, request_receive, reply_send)
            async with request_send:
                for _ in range(size):
                    await request_send.send(value)
                    value = await reply_receive.receive()
        expect(value == size, f"raw loop ended at {value}, expected {size}")

    return Workload(once, ops=size)


def router(size: int, *, chosen: int = 3) -> Workload:
    """A router coroutine picks ``chosen`` of ``size`` branch functions, which then run
    as tasks in one nursery, outputs collected in a dict (ops = 1 routed run)."""
    branches = {f"b{i}": trivial for i in range(size)}

    async def route(_value: int) -> list[str]:
        return [f"b{i}" for i in range(0, size, max(1, size // chosen))][:chosen]

    async def once() -> None:
        outputs: dict[str, int] = {}

        async def branch(name: str) -> None:
            outputs[name] = await branches[name](0)

        names = await route(0)
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(branch, name)
        expect(len(outputs) == chosen, f"raw router ran {len(outputs)} branches, expected {chosen}")

    return Workload(once)


def ledger_flood(size: int, *, cost: Decimal = Decimal("0.001")) -> Workload:
    """``size`` concurrent tasks each sending a Decimal cost over one memory channel
    (buffer 1,024) to a single ledger task that sums them (ops = updates)."""

    async def once() -> None:
        total = [Decimal(0)]
        send, receive = trio.open_memory_channel[Decimal](1024)

        async def ledger() -> None:
            async with receive:
                async for amount in receive:
                    total[0] += amount

        async def charge() -> None:
            await trivial(0)
            await send.send(cost)

        async with trio.open_nursery() as outer:
            outer.start_soon(ledger)
            async with send, trio.open_nursery() as branches:
                for _ in range(size):
                    branches.start_soon(charge)
        expect(total[0] == cost * size, f"raw ledger total {total[0]}, expected {cost * size}")

    return Workload(once, ops=size)


class _Crash(Exception):
    pass


def restart_storm(size: int) -> Workload:
    """A supervising loop restarts a child task that crashes on every message: each
    restart opens a nursery, spawns the child, which receives a message from a memory
    channel and raises; the loop catches the group and starts again (ops = restarts)."""

    async def once() -> None:
        send, receive = trio.open_memory_channel[int](1024)
        restarts = 0

        async def child() -> None:
            try:
                await receive.receive()
            except trio.EndOfChannel:
                return
            raise _Crash

        async def feed() -> None:
            async with send:
                for index in range(size):
                    await send.send(index)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            while True:
                crashed = False
                try:
                    async with trio.open_nursery() as child_nursery:
                        child_nursery.start_soon(child)
                except* _Crash:
                    crashed = True
                if not crashed:
                    break
                restarts += 1
        expect(restarts == size, f"raw supervisor restarted {restarts} times, expected {size}")

    return Workload(once, ops=size)


def channel_flood(size: int, *, buffer: int = 16) -> Workload:
    """``size`` messages sent through a memory channel with a ``buffer``-slot buffer to
    one consumer task that counts them (ops = messages)."""

    async def once() -> None:
        send, receive = trio.open_memory_channel[int](buffer)
        count = [0]

        async def consume() -> None:
            async with receive:
                async for _ in receive:
                    count[0] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            async with send:
                for index in range(size):
                    await send.send(index)
        expect(count[0] == size, f"raw consumer counted {count[0]}, expected {size}")

    return Workload(once, ops=size)


def stream(size: int) -> Workload:
    """A producer task sends ``size`` str chunks over an unbuffered memory channel to
    the consumer, which counts them and joins them at the end (ops = chunks)."""

    async def once() -> None:
        send, receive = trio.open_memory_channel[str](0)
        chunks: list[str] = []

        async def produce() -> None:
            async with send:
                for _ in range(size):
                    await send.send("x")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for chunk in receive:
                    chunks.append(chunk)
        expect(
            len("".join(chunks)) == size,
            f"raw stream delivered {len(chunks)} chunks, expected {size}",
        )

    return Workload(once, ops=size)
