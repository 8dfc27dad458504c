"""The actor kernel: mailboxes, backpressure, tell/ask, stop, dead letters, cancellation."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors.actors import (
    Actor,
    ActorCell,
    ActorStatistics,
    DeadLetter,
    DeadLetters,
    run_actor,
    start_actor,
)
from flujo_actors.errors import ActorCrashed, ActorStopped, AskTimeout, MailboxFull

if TYPE_CHECKING:
    from tests.task_tree import all_tasks  # mypy names test modules by path
else:
    from task_tree import all_tasks  # pytest puts tests/ on sys.path


class Recorder(Actor):
    """Records every message; a message that is a trio.Event is waited for first."""

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log: list[Any] = log if log is not None else []
        self.stopped = False

    async def on_stop(self) -> None:
        self.stopped = True
        self.log.append("on_stop")

    async def handle(self, message: Any) -> Any:
        if isinstance(message, trio.Event):
            await message.wait()
        self.log.append(message)
        return message


class Doubler(Actor):
    async def handle(self, message: int) -> int:
        return message * 2


class Boom(Actor):
    async def handle(self, message: Any) -> Any:
        raise ValueError(f"bad {message}")


class Sleeper(Actor):
    """Sleeps ``message`` seconds, then answers ``("slept", message)``."""

    def __init__(self) -> None:
        self.handled: list[float] = []

    async def handle(self, message: float) -> tuple[str, float]:
        await trio.sleep(message)
        self.handled.append(message)
        return ("slept", message)


# -- tell, backpressure ----------------------------------------------------


async def test_tell_waits_while_the_mailbox_is_full() -> None:
    gate = trio.Event()
    log: list[Any] = []
    sent: list[str] = []

    async def sender(ref: Any) -> None:
        await ref.tell("third")
        sent.append("third")

    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(log), name="rec", mailbox_size=1)
        await ref.tell(gate)  # taken by the actor, which now waits on the gate
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("second")  # fills the one-slot mailbox
        nursery.start_soon(sender, ref)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []  # blocked: backpressure
        assert ref.statistics().mailbox_depth == 1
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["third"]
        assert log == [gate, "second", "third"]
        assert ref.statistics().mailbox_depth == 0
        await ref.stop()


async def test_tell_nowait_on_a_full_mailbox_raises_mailbox_full() -> None:
    gate = trio.Event()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(), name="rec", mailbox_size=1)
        ref.tell_nowait(gate)
        await trio.testing.wait_all_tasks_blocked()
        ref.tell_nowait("queued")
        with pytest.raises(
            MailboxFull,
            match=(
                r"^Mailbox of actor 'rec' is full \(mailbox_size=1\); use `await "
                r"ref\.tell\(\.\.\.\)` to wait for room, or enlarge mailbox_size\.$"
            ),
        ):
            ref.tell_nowait("refused")
        assert ref.statistics().mailbox_depth == 1
        gate.set()
        await ref.stop()


# -- ask ---------------------------------------------------------------------


async def test_ask_returns_the_handlers_value() -> None:
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Doubler(), name="double")
        assert await ref.ask(21) == 42
        assert await ref.ask(2, timeout_s=1.0) == 4
        await ref.stop()


async def test_ask_whose_handler_raises_gets_actor_crashed_with_the_cause() -> None:
    caught: list[ActorCrashed] = []
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match=r"^bad x$")):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, Boom(), name="boom")
            with pytest.raises(
                ActorCrashed,
                match=r"^Actor 'boom' crashed handling the message: ValueError: bad x$",
            ) as info:
                await ref.ask("x")
            caught.append(info.value)
    (err,) = caught
    assert isinstance(err.__cause__, ValueError)
    assert err.cause is err.__cause__
    assert err.actor == "boom"


async def test_ask_timeout_then_the_late_reply_goes_to_dead_letters(
    autojump_clock: trio.abc.Clock,
) -> None:
    sleeper = Sleeper()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, sleeper, name="slow")
        with pytest.raises(
            AskTimeout,
            match=(
                r"^Actor 'slow' did not answer within 1\.0 s \(message 5\.0\); "
                r"raise timeout_s or check the actor's load\.$"
            ),
        ):
            await ref.ask(5.0, timeout_s=1.0)
        assert trio.current_time() == 1.0
        # The actor is alive and answers the next ask after finishing the first.
        assert await ref.ask(0.0) == ("slept", 0.0)
        assert trio.current_time() == 5.0
        assert sleeper.handled == [5.0, 0.0]
        assert ref.dead_letters.snapshot() == [
            DeadLetter(recipient="slow", message=("slept", 5.0), reason="late-reply")
        ]
        assert ref.statistics().state == "running"
        await ref.stop()


async def test_ask_timeout_covers_waiting_for_mailbox_room(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = trio.Event()
    log: list[Any] = []
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(log), name="rec", mailbox_size=1)
        await ref.tell(gate)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("queued")
        with pytest.raises(AskTimeout):
            await ref.ask("never sent", timeout_s=2.0)
        assert trio.current_time() == 2.0
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log == [gate, "queued"]
        assert ref.dead_letters.snapshot() == []
        await ref.stop()


async def test_a_cancelled_asker_abandons_its_reply() -> None:
    gate = trio.Event()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(), name="rec")
        scope = trio.CancelScope()

        async def asker() -> None:
            with scope:
                await ref.ask(gate)

        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert ref.dead_letters.snapshot() == [
            DeadLetter(recipient="rec", message=gate, reason="late-reply")
        ]
        await ref.stop()


# -- stop and dead letters ---------------------------------------------------


async def test_messages_to_a_stopped_actor_go_to_dead_letters() -> None:
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(), name="rec")
        await ref.stop()
        await ref.tell("told")
        ref.tell_nowait("told-nowait")
        with pytest.raises(ActorStopped, match=r"^Actor 'rec' stopped before answering\.$"):
            await ref.ask("asked")
        await ref.stop()  # idempotent
    assert ref.dead_letters.snapshot() == [
        DeadLetter(recipient="rec", message="told", reason="stopped"),
        DeadLetter(recipient="rec", message="told-nowait", reason="stopped"),
        DeadLetter(recipient="rec", message="asked", reason="stopped"),
    ]
    assert ref.statistics().state == "stopped"


async def test_stop_dead_letters_queued_messages_and_fails_queued_asks() -> None:
    gate = trio.Event()
    actor = Recorder()
    outcomes: dict[str, BaseException] = {}

    async def asker(ref: Any, message: Any) -> None:
        try:
            await ref.ask(message)
        except ActorStopped as exc:
            outcomes[str(message)] = exc

    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, actor, name="rec")
        nursery.start_soon(asker, ref, gate)  # in flight: the handler waits on the gate
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("queued-tell")
        nursery.start_soon(asker, ref, "queued-ask")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.statistics().mailbox_depth == 2
        await ref.stop()
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(outcomes) == sorted([str(gate), "queued-ask"])
    assert all(str(e) == "Actor 'rec' stopped before answering." for e in outcomes.values())
    assert ref.dead_letters.snapshot() == [
        DeadLetter(recipient="rec", message="queued-tell", reason="stopped"),
        DeadLetter(recipient="rec", message="queued-ask", reason="stopped"),
    ]
    assert actor.log == ["on_stop"]
    assert actor.stopped


async def test_a_sender_blocked_on_a_full_mailbox_is_dead_lettered_at_stop() -> None:
    gate = trio.Event()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(), name="rec", mailbox_size=0)
        await ref.tell(gate)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ref.tell, "blocked")
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()
    # The interrupted message and the blocked sender's (two tasks: any order).
    letters = ref.dead_letters.snapshot()
    assert len(letters) == 2
    assert {letter.message for letter in letters} == {gate, "blocked"}
    assert {letter.reason for letter in letters} == {"stopped"}


async def test_cancelling_an_actor_blocked_in_a_handler_runs_on_stop_and_leaves_no_task() -> None:
    before = all_tasks()
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, actor, name="rec")
        blocker = trio.Event()  # never set: the handler blocks forever
        await ref.tell(blocker)
        await ref.tell("queued")
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 1
        nursery.cancel_scope.cancel()
    assert nursery.child_tasks == frozenset()
    assert all_tasks() == before
    assert actor.log == ["on_stop"]
    assert ref.statistics().state == "stopped"
    assert ref.dead_letters.snapshot() == [
        DeadLetter(recipient="rec", message=blocker, reason="stopped"),  # cut short
        DeadLetter(recipient="rec", message="queued", reason="stopped"),
    ]


async def test_cancelling_an_actor_in_on_start_still_runs_on_stop() -> None:
    stops: list[str] = []

    class SlowStart(Actor):
        async def on_start(self) -> None:
            await trio.sleep_forever()

        async def on_stop(self) -> None:
            stops.append(self.name)

    before = all_tasks()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(start_actor, nursery, SlowStart(), name="slow"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert stops == ["slow"]
    assert all_tasks() == before


async def test_a_handler_raising_end_of_channel_is_a_crash_not_a_stop() -> None:
    class Leaky(Actor):
        async def handle(self, message: Any) -> None:
            raise trio.EndOfChannel

    with pytest.RaisesGroup(trio.EndOfChannel):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, Leaky(), name="leaky")
            await ref.tell("x")
            await trio.sleep_forever()
    assert ref.statistics().state == "stopped"
    assert ref.statistics().last_error == "EndOfChannel: "


async def test_the_tell_that_crashed_an_unsupervised_actor_is_dead_lettered() -> None:
    letters = DeadLetters()
    gate = trio.Event()

    class Gated(Boom):
        async def handle(self, message: Any) -> Any:
            if message == "first":
                await gate.wait()
                return None
            return await super().handle(message)

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match=r"^bad second$")):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, Gated(), name="boom", dead_letters=letters)
            for message in ("first", "second", "third"):
                await ref.tell(message)
            gate.set()
            await trio.sleep_forever()
    # Nobody restarts it: the crashing tell and the queued one are both accounted for.
    assert letters.snapshot() == [
        DeadLetter(recipient="boom", message="second", reason="crashed"),
        DeadLetter(recipient="boom", message="third", reason="stopped"),
    ]
    assert ref.statistics().state == "stopped"


async def test_an_unimplemented_handle_crashes_with_a_clear_message() -> None:
    with pytest.RaisesGroup(
        pytest.RaisesExc(NotImplementedError, match=r"^Actor\.handle is not implemented$")
    ):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, Actor(), name="plain")
            await ref.tell("x")


# -- statistics, run_actor ---------------------------------------------------


async def test_statistics_reports_state_depth_handled_and_last_error() -> None:
    gate = trio.Event()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(), name="rec", mailbox_size=4)
        await ref.ask("one")
        await ref.tell(gate)
        await ref.tell("two")
        await ref.tell("three")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.statistics() == ActorStatistics(
            name="rec",
            state="running",
            mailbox_depth=2,
            mailbox_capacity=4,
            handled=1,
            restarts=0,
            last_error=None,
        )
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert ref.statistics().handled == 4
        await ref.stop()
        assert ref.statistics().state == "stopped"
    assert repr(ref) == "<ActorRef 'rec' (stopped)>"


async def test_run_actor_handles_the_first_message_before_the_mailbox() -> None:
    log: list[Any] = []
    cell = ActorCell("rec", mailbox_size=math.inf)
    cell.ref.tell_nowait("from mailbox")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_actor(
                Recorder(log),
                cell,
                task_status=task_status,
                first_message="first",
                has_first_message=True,
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        await cell.ref.stop()
    assert log == ["first", "from mailbox", "on_stop"]
    assert cell.statistics().mailbox_capacity == math.inf


async def test_a_first_message_is_put_back_if_on_start_fails_or_is_cancelled() -> None:
    class FailingStart(Actor):
        async def on_start(self) -> None:
            raise OSError("no socket")

    class SlowStart(Actor):
        async def on_start(self) -> None:
            await trio.sleep_forever()

    cell = ActorCell("x")
    with pytest.raises(OSError, match=r"^no socket$"):
        await run_actor(FailingStart(), cell, first_message="first", has_first_message=True)
    assert cell.take_front() == ("first", True)  # a supervisor hands it to the next instance
    assert cell.take_front() == (None, False)

    with trio.move_on_after(0) as scope:
        await run_actor(SlowStart(), cell, first_message="again", has_first_message=True)
    assert scope.cancelled_caught
    assert cell.closed  # unsupervised and cancelled: closed, the first message is dead
    assert cell.dead_letters.snapshot() == [
        DeadLetter(recipient="x", message="again", reason="stopped")
    ]
    cell.push_front("late")  # a closed mailbox takes nothing back
    assert cell.dead_letters.snapshot()[-1] == DeadLetter(
        recipient="x", message="late", reason="stopped"
    )


async def test_a_supervised_cell_keeps_its_mailbox_when_its_actor_is_cancelled() -> None:
    cell = ActorCell("rec")
    cell.supervised = True
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_actor(Recorder(), cell, task_status=task_status)
        )
        await cell.ref.tell(trio.Event())
        await cell.ref.tell("kept")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert not cell.closed
    assert cell.statistics().mailbox_depth == 1
    assert cell.dead_letters.snapshot() == []


def test_cell_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match=r"^Actor name must be a non-empty string, got ''\.$"):
        ActorCell("")
    with pytest.raises(
        ValueError,
        match=r"^Actor 'a': mailbox_size must be an int >= 0 or math\.inf, got -1\.$",
    ):
        ActorCell("a", mailbox_size=-1)


# -- dead letters --------------------------------------------------------------


async def test_dead_letter_subscribers_receive_every_new_letter() -> None:
    letters = DeadLetters()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Recorder(), name="rec", dead_letters=letters)
        stream = letters.subscribe()
        await ref.stop()
        await ref.tell("a")
        await ref.tell("b")
        assert await stream.receive() == DeadLetter(recipient="rec", message="a", reason="stopped")
        assert await stream.receive() == DeadLetter(recipient="rec", message="b", reason="stopped")
        await stream.aclose()
        await ref.tell("c")  # a closed subscriber is dropped, never an error
    assert [letter.message for letter in letters.snapshot()] == ["a", "b", "c"]
    assert letters.total == 3


def test_dead_letters_keep_the_newest_and_count_the_rest() -> None:
    letters = DeadLetters(capacity=2)
    seen: list[DeadLetter] = []
    letters.add_listener(seen.append)
    slow = letters.subscribe(buffer=1)
    for i in range(3):
        letters.record("x", i, "stopped")
    letters.remove_listener(seen.append)
    letters.remove_listener(seen.append)  # unknown listeners are ignored
    letters.record("x", 3, "stopped")
    assert [letter.message for letter in letters.snapshot()] == [2, 3]
    assert [letter.message for letter in seen] == [0, 1, 2]
    assert len(letters) == 2
    assert letters.total == 4
    # 2 evicted from the log + 3 the one-slot subscriber could not take.
    assert letters.dropped == 5
    assert slow.receive_nowait().message == 0
    with pytest.raises(ValueError, match=r"^DeadLetters: capacity must be >= 1, got 0\.$"):
        DeadLetters(capacity=0)
