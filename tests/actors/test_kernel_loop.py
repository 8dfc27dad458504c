"""The kernel without pipelines: the three mailbox types, the one loop's hooks, the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors.actors import Actor, ActorCell, DeadLetters, run_actor, start_actor
from flujo_actors.actors.mailbox import BatchingMailbox, Mailbox, OneShotMailbox, Request
from flujo_actors.actors.registry import KERNEL, Registry
from flujo_actors.errors import ActorCrashed, ActorStopped

if TYPE_CHECKING:
    from collections.abc import Sequence


class Batcher(Actor):
    """Records each batch it is handed; answers every message with its batch's size."""

    def __init__(self, fail_on: Any = None) -> None:
        self.batches: list[list[Any]] = []
        self.fail_on = fail_on

    async def handle_batch(self, messages: Sequence[Any]) -> Sequence[Any] | None:
        batch = list(messages)
        self.batches.append(batch)
        if self.fail_on in batch:
            raise ValueError(f"bad batch {batch!r}")
        return [len(batch)] * len(batch)


class Echo(Actor):
    async def handle(self, message: Any) -> Any:
        return message


class Ping(Request):
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value

    def __repr__(self) -> str:
        return f"Ping({self.value})"


# -- Mailbox ---------------------------------------------------------------------


async def test_a_bounded_mailbox_refuses_when_full_and_hands_back_what_it_held() -> None:
    box = Mailbox(2)
    box.put_nowait("a")
    box.put_nowait("b")
    with pytest.raises(trio.WouldBlock):
        box.put_nowait("c")
    assert (box.depth, box.capacity) == (2, 2)
    box.push_front("head")
    assert box.depth == 3
    assert await box.get() == "head"
    assert box.close() == ["a", "b"]
    assert box.closed
    with pytest.raises(trio.ClosedResourceError):
        box.put_nowait("late")


async def test_a_finished_mailbox_delivers_what_is_queued_then_ends() -> None:
    box = Mailbox(4)
    for m in ("a", "b", "c"):
        box.put_nowait(m)
    box.finish()
    assert await box.get_batch() == ["a", "b", "c"]
    with pytest.raises(trio.EndOfChannel):
        await box.get()


# -- OneShotMailbox --------------------------------------------------------------


async def test_a_one_shot_mailbox_takes_one_message_and_then_ends() -> None:
    box = OneShotMailbox()
    assert (box.depth, box.capacity, box.closed) == (0, 1, False)
    await box.put("frame")
    assert (box.depth, box.closed) == (1, True)
    with pytest.raises(trio.ClosedResourceError):
        box.put_nowait("second")
    assert await box.get() == "frame"
    assert box.depth == 0
    with pytest.raises(trio.EndOfChannel):
        await box.get()


async def test_an_actor_on_a_one_shot_mailbox_handles_its_message_and_stops() -> None:
    letters = DeadLetters()
    cell = ActorCell("once", dead_letters=letters, mailbox=OneShotMailbox("only", full=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_actor, Echo(), cell)
    assert (cell.state, cell.handled) == ("stopped", 1)
    await cell.ref.tell("second")  # refused: it has had its one message
    assert [(d.message, d.reason) for d in letters.snapshot()] == [("second", "stopped")]


# -- BatchingMailbox -------------------------------------------------------------


async def test_a_batching_mailbox_wakes_its_receiver_per_batch_or_at_once_for_an_ask() -> None:
    box = BatchingMailbox(3)
    batches: list[list[Any]] = []

    async def receiver() -> None:
        while True:
            try:
                batches.append(list(await box.get_batch()))
            except trio.EndOfChannel:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        box.put_nowait(1)
        box.put_nowait(2)
        await trio.testing.wait_all_tasks_blocked()
        assert (batches, box.depth) == ([], 2)  # below wake_every: nobody woken
        box.put_nowait(3)
        await trio.testing.wait_all_tasks_blocked()
        assert batches == [[1, 2, 3]]
        box.put_nowait(4)

        async def answer() -> None:
            # The receiver holds the request: answer it the way an actor does.
            await trio.testing.wait_all_tasks_blocked()
            ping = batches[-1][-1]
            ping.answer = ("pong", ping.value)
            ping.reply()

        nursery.start_soon(answer)
        assert await box.ask(Ping(5)) == ("pong", 5)
        assert [len(b) for b in batches] == [3, 2]
        box.finish()
    assert box.depth == 0


async def test_admission_decides_what_a_batching_mailbox_takes_without_an_ask() -> None:
    box = BatchingMailbox(100, admit=lambda m: m < 10)
    assert box.offer(3) is True
    assert box.offer(30) is False  # refused: nothing queued, the sender must ask
    assert box.depth == 1
    assert box.close() == [3]
    with pytest.raises(trio.ClosedResourceError):
        box.offer(4)


async def test_requests_left_in_a_closed_batching_mailbox_fail_their_askers() -> None:
    letters = DeadLetters()
    box = BatchingMailbox(100)
    cell = ActorCell("batcher", dead_letters=letters, mailbox=box)
    errors: list[BaseException] = []

    async def asker() -> None:
        try:
            await box.ask(Ping(1))
        except ActorStopped as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        told = Ping(2)
        box.put_nowait(told)
        cell.close_mailbox()
    assert [str(e) for e in errors] == ["Actor 'batcher' stopped before answering Ping(1)."]
    assert [(d.message, d.reason) for d in letters.snapshot()] == [(told, "stopped")]


# -- the loop's handle_batch hook ------------------------------------------------


async def test_handle_batch_gets_everything_queued_in_one_turn_and_answers_asks_by_index() -> None:
    actor = Batcher()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, actor, name="batcher", mailbox_size=16)
        for i in range(5):
            ref.tell_nowait(i)
        answer = await ref.ask("q")
        assert answer == 6  # it came in the same batch as the five tells
        assert actor.batches == [[0, 1, 2, 3, 4, "q"]]
        stats = ref.statistics()
        assert (stats.handled, stats.mailbox_depth) == (6, 0)
        await ref.stop()


async def test_a_crashing_batch_fails_its_asks_and_crashes_the_actor() -> None:
    actor = Batcher(fail_on="boom")
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match=r"^bad batch \['boom'\]$")):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, actor, name="batcher")
            with pytest.raises(
                ActorCrashed,
                match=r"^Actor 'batcher' crashed handling the message: ValueError: bad batch",
            ):
                await ref.ask("boom")
    assert ref.statistics().state == "stopped"
    assert ref.statistics().last_error == "ValueError: bad batch ['boom']"


# -- the registry ----------------------------------------------------------------


async def test_running_actors_are_in_their_registry_exactly_while_they_run() -> None:
    registry = Registry()
    cell = ActorCell("echo", registry=registry, kind="step", path=("p", "echo"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_actor, Echo(), cell)
        await trio.testing.wait_all_tasks_blocked()
        assert list(registry) == [cell]
        assert cell not in KERNEL  # a registry of its own replaces the kernel's
        assert cell.task is not None
        cell.mailbox.finish()
    assert list(registry) == []
    assert len(registry) == 0


async def test_user_actors_are_in_the_kernels_registry_while_they_run() -> None:
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Echo(), name="user")
        assert ref.cell in KERNEL
        await ref.stop()
    assert ref.cell not in KERNEL
