"""Supervision trees: restart types x strategies, intensity, nesting, mailboxes, backoff."""

from __future__ import annotations

import functools
import math
import re
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors.actors import (
    Actor,
    ActorStatistics,
    Backoff,
    ChildCrashed,
    ChildRestarted,
    ChildSpec,
    ChildStarted,
    ChildStopped,
    DeadLetter,
    DeadLettered,
    DynamicSupervisor,
    Restart,
    RestartRecord,
    Strategy,
    Supervisor,
    SupervisorStatistics,
)
from flujo_actors.errors import ActorCrashed, ActorStopped, AskTimeout, RestartIntensityExceeded

if TYPE_CHECKING:
    from tests.task_tree import all_tasks  # mypy names test modules by path
else:
    from task_tree import all_tasks  # pytest puts tests/ on sys.path

Journal = list[str]


class Probe(Actor):
    """Journals its life: ``start a``, ``a: msg``, ``stop a``.

    Messages: ``"crash"`` raises; a ``trio.Event`` is waited for; ``Sleep(s)``
    sleeps; ``Flaky`` crashes until it was tried ``fails`` times; ``Poison``
    always crashes; anything else is journaled and echoed back.
    """

    instances = 0

    def __init__(self, journal: Journal, start_s: float = 0.0) -> None:
        self.journal = journal
        self.start_s = start_s
        Probe.instances += 1
        self.instance = Probe.instances

    async def on_start(self) -> None:
        self.journal.append(f"start {self.name}")
        if self.start_s:
            await trio.sleep(self.start_s)

    async def on_stop(self) -> None:
        self.journal.append(f"stop {self.name}")

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"crash in {self.name}")
        if isinstance(message, trio.Event):
            await message.wait()
            return "released"
        if isinstance(message, Flaky):
            message.tries += 1
            if message.tries <= message.fails:
                raise RuntimeError(f"flaky try {message.tries}")
        if isinstance(message, Poison):
            raise RuntimeError("poison")
        self.journal.append(f"{self.name}: {message}")
        return (self.instance, message)


class Flaky:
    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.tries = 0

    def __repr__(self) -> str:
        return f"Flaky({self.fails})"


class Poison:
    def __repr__(self) -> str:
        return "Poison()"


def spec(name: str, journal: Journal, start_s: float = 0.0, **options: Any) -> ChildSpec:
    return ChildSpec(name, Probe, journal, start_s, **options)


async def start(nursery: trio.Nursery, supervisor: Supervisor) -> Supervisor:
    running: Supervisor = await nursery.start(supervisor.run)
    return running


async def crash(sup: Supervisor, name: str) -> None:
    """Crash child ``name`` once (an ask: never redelivered) and let the dust settle."""
    with pytest.raises(ActorCrashed):
        await sup.ref(name).ask("crash")
    await trio.testing.wait_all_tasks_blocked()


def kinds(sup: Supervisor) -> list[str]:
    return [f"{type(e).__name__} {e.child}" for e in sup.events()]


# -- start and stop order ---------------------------------------------------------


async def test_children_start_in_order_and_stop_in_reverse(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal, start_s=1.0), spec("b", journal, start_s=1.0), spec("c", journal)],
        name="root",
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        assert sup is supervisor
        assert trio.current_time() == 2.0  # returned once every on_start ran, in order
        assert journal == ["start a", "start b", "start c"]
        assert sup.statistics().state == "running"
        await sup.stop()
        await sup.stop()  # idempotent
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert sup.events() == [
        ChildStarted(supervisor="root", child="a", time=1.0),
        ChildStarted(supervisor="root", child="b", time=2.0),
        ChildStarted(supervisor="root", child="c", time=2.0),
        ChildStopped(supervisor="root", child="c", time=2.0, reason="shutdown"),
        ChildStopped(supervisor="root", child="b", time=2.0, reason="shutdown"),
        ChildStopped(supervisor="root", child="a", time=2.0, reason="shutdown"),
    ]
    assert sup.statistics().state == "stopped"


async def test_a_child_failing_its_first_start_fails_the_supervisor() -> None:
    journal: Journal = []

    class BadStart(Probe):
        async def on_start(self) -> None:
            await super().on_start()
            raise OSError("no socket")

    supervisor = Supervisor(
        [spec("a", journal), ChildSpec("b", BadStart, journal), spec("c", journal)], name="root"
    )
    async with trio.open_nursery() as nursery:
        with pytest.raises(
            OSError, match=r"^no socket\nwhile starting child 'b' of supervisor 'root'$"
        ) as info:
            await nursery.start(supervisor.run)
    assert info.value.__notes__ == ["while starting child 'b' of supervisor 'root'"]
    assert journal == ["start a", "start b", "stop b", "stop a"]
    assert kinds(supervisor) == [
        "ChildStarted a",
        "ChildCrashed b",
        "ChildStopped b",
        "ChildStopped a",
    ]
    assert supervisor.statistics().state == "failed"


# -- restart type x strategy --------------------------------------------------------

GROUP_RESTART = {
    Strategy.ONE_FOR_ONE: ["start b"],
    Strategy.ONE_FOR_ALL: ["stop c", "stop a", "start a", "start b", "start c"],
    Strategy.REST_FOR_ONE: ["stop c", "start b", "start c"],
}


@pytest.mark.parametrize("exit_kind", ["crash", "normal"])
@pytest.mark.parametrize("restart", list(Restart))
@pytest.mark.parametrize("strategy", list(Strategy))
async def test_restart_type_and_strategy(
    autojump_clock: trio.abc.Clock, strategy: Strategy, restart: Restart, exit_kind: str
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("b", journal, restart=restart), spec("c", journal)],
        strategy=strategy,
        name="root",
    )
    restarted = restart is Restart.PERMANENT or (
        restart is Restart.TRANSIENT and exit_kind == "crash"
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        ref = sup.ref("b")
        del journal[:]
        if exit_kind == "crash":
            await crash(sup, "b")
        else:
            await ref.stop()  # b stops itself "normally"
            await trio.testing.wait_all_tasks_blocked()
        # on_stop of b ran when it exited, then the strategy's group restarted.
        assert journal == ["stop b", *(GROUP_RESTART[strategy] if restarted else [])]
        stats = ref.statistics()
        if restarted:
            assert stats.state == "running"
            assert stats.restarts == 1
            assert (await ref.ask("ping"))[1] == "ping"  # same ref, new instance
            restarted_event = sup.events()[-1]
            assert isinstance(restarted_event, ChildRestarted)
        else:
            assert stats.state == "stopped"
            assert stats.restarts == 0
            assert sup.events()[-1] == ChildStopped(
                supervisor="root",
                child="b",
                time=0.0,
                reason="crashed" if exit_kind == "crash" else "normal",
                error="RuntimeError: crash in b" if exit_kind == "crash" else None,
            )
            await ref.tell("after")
            assert sup.dead_letters()[-1] == DeadLetter(
                recipient="b", message="after", reason="stopped"
            )
        group_size = {Strategy.ONE_FOR_ONE: 1, Strategy.ONE_FOR_ALL: 3, Strategy.REST_FOR_ONE: 2}
        assert sup.statistics().restarts == (group_size[strategy] if restarted else 0)
        await sup.stop()


async def test_one_for_all_does_not_restart_a_temporary_sibling(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("t", journal, restart=Restart.TEMPORARY)],
        strategy=Strategy.ONE_FOR_ALL,
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        del journal[:]
        await crash(sup, "a")
        assert journal == ["stop a", "stop t", "start a"]
        assert sup.ref("t").statistics().state == "stopped"
        await sup.stop()


async def test_an_interrupted_sibling_gets_its_tell_again_and_its_asker_actor_stopped(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal), spec("b", journal)], strategy=Strategy.ONE_FOR_ALL)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        gate = trio.Event()
        await sup.ref("b").tell(gate)  # b is busy with a tell when a crashes
        await trio.testing.wait_all_tasks_blocked()
        await crash(sup, "a")
        assert journal[-3:] == ["stop b", "start a", "start b"]
        gate.set()  # the new b got the interrupted tell first
        assert await sup.ref("b").ask("next") == (Probe.instances, "next")

        busy = trio.Event()
        outcome: list[BaseException] = []

        async def asker() -> None:
            try:
                await sup.ref("b").ask(busy)
            except ActorStopped as exc:
                outcome.append(exc)

        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        await crash(sup, "a")
        assert [str(e) for e in outcome] == ["Actor 'b' stopped before answering."]
        await sup.stop()


# -- intensity ---------------------------------------------------------------------


async def test_intensity_exceeded_stops_children_in_reverse_and_raises_with_history(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("b", journal), spec("c", journal)],
        max_restarts=2,
        max_seconds=5.0,
        name="root",
    )
    caught: list[RestartIntensityExceeded] = []

    def keep(exc: RestartIntensityExceeded) -> bool:
        caught.append(exc)
        return True

    with pytest.RaisesGroup(
        pytest.RaisesExc(
            RestartIntensityExceeded,
            match=(
                r"^Supervisor 'root' gave up: 3 restarts within 5\.0 s exceed max_restarts=2 "
                r"\(last: child 'b' crashed: RuntimeError: crash in b\); "
                r"all children were stopped\.$"
            ),
            check=keep,
        )
    ):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, supervisor)
            await crash(sup, "a")  # t=0
            await trio.sleep(1.0)
            await crash(sup, "b")  # t=1
            await trio.sleep(4.5)
            await crash(sup, "b")  # t=5.5: the t=0 restart left the window -> 2 restarts
            await trio.sleep(0.25)
            del journal[:]
            await crash(sup, "b")  # t=5.75: 1, 5.5, 5.75 -> 3 > 2
            await trio.sleep_forever()
    (error,) = caught
    assert error.history == (
        RestartRecord(child="b", time=1.0, error="RuntimeError: crash in b"),
        RestartRecord(child="b", time=5.5, error="RuntimeError: crash in b"),
        RestartRecord(child="b", time=5.75, error="RuntimeError: crash in b"),
    )
    # b's on_stop ran when it crashed; then c and a, in reverse start order.
    assert journal == ["stop b", "stop c", "stop a"]
    assert [e.reason for e in supervisor.events() if isinstance(e, ChildStopped)] == [
        "intensity",
        "intensity",
        "intensity",
    ]
    assert supervisor.statistics().state == "failed"
    assert [s.state for s in supervisor.statistics().children] == ["stopped"] * 3


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_group_strategies_count_one_restart_per_crash(
    autojump_clock: trio.abc.Clock, strategy: Strategy
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("b", journal)], strategy=strategy, max_restarts=1
    )
    with pytest.RaisesGroup(RestartIntensityExceeded):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, supervisor)
            await crash(sup, "a")
            assert sup.statistics().state == "running"
            del journal[:]
            await crash(sup, "a")
            await trio.sleep_forever()
    assert journal == ["stop a", "stop b"]


async def test_max_restarts_zero_gives_up_on_the_first_exit(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], max_restarts=0, name="strict")
    with pytest.RaisesGroup(
        pytest.RaisesExc(
            RestartIntensityExceeded,
            match=(
                r"^Supervisor 'strict' gave up: 1 restarts within 5\.0 s exceed max_restarts=0 "
                r"\(last: child 'a' exited normally\); all children were stopped\.$"
            ),
        )
    ):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, supervisor)
            await sup.ref("a").stop()
            await trio.sleep_forever()


# -- nesting -------------------------------------------------------------------------


def inner_supervisor(journal: Journal) -> Supervisor:
    return Supervisor(
        [spec("x", journal), spec("y", journal)],
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=1,
        name="inner",
    )


async def test_a_nested_supervisor_that_gives_up_is_restarted_by_its_parent(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    root = Supervisor(
        [ChildSpec("inner", inner_supervisor, journal), spec("z", journal)], name="root"
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, root)
        assert journal == ["start x", "start y", "start z"]
        with pytest.raises(
            LookupError,
            match=(
                r"^Child 'inner' of supervisor 'root' is a supervisor, not an actor; "
                r"use sup\.supervisor\('inner'\)\.ref\(\.\.\.\) to reach its children\.$"
            ),
        ):
            sup.ref("inner")
        with pytest.raises(
            LookupError,
            match=r"^Child 'z' of supervisor 'root' is an actor, not a supervisor; use sup\.ref\('z'\)\.$",
        ):
            sup.supervisor("z")
        first_inner = sup.supervisor("inner")
        old_x = first_inner.ref("x")
        await crash(first_inner, "x")  # inner restarts x (1 <= max_restarts)
        del journal[:]
        with pytest.raises(ActorCrashed):
            await old_x.ask("crash")  # inner gives up: y then x stopped, root restarts it
        await trio.testing.wait_all_tasks_blocked()
        assert journal == ["stop x", "stop y", "start x", "start y"]
        second_inner = sup.supervisor("inner")
        assert second_inner is not first_inner
        assert first_inner.statistics().state == "failed"
        assert (await second_inner.ref("x").ask("hi"))[1] == "hi"
        # Refs into the old subtree are dead; their letters reach the root's log.
        await old_x.tell("lost")
        assert sup.dead_letters()[-1] == DeadLetter(recipient="x", message="lost", reason="stopped")
        crashed = [e for e in sup.events() if isinstance(e, ChildCrashed)]
        assert crashed == [
            ChildCrashed(
                supervisor="root",
                child="inner",
                time=0.0,
                error=(
                    "RestartIntensityExceeded: Supervisor 'inner' gave up: 2 restarts within "
                    "5.0 s exceed max_restarts=1 (last: child 'x' crashed: RuntimeError: "
                    "crash in x); all children were stopped."
                ),
            )
        ]
        assert sup.statistics().children[0].restarts == 1
        del journal[:]
        await sup.stop()
    assert journal == ["stop z", "stop y", "stop x"]


async def test_an_exceeded_nested_supervisor_escalates_when_the_parent_gives_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    root = Supervisor(
        [spec("z", journal), ChildSpec("inner", inner_supervisor, journal)],
        max_restarts=0,
        name="root",
    )
    caught: list[RestartIntensityExceeded] = []
    with pytest.RaisesGroup(
        pytest.RaisesExc(RestartIntensityExceeded, check=lambda e: caught.append(e) or True)  # type: ignore[func-returns-value]
    ):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, root)
            inner = sup.supervisor("inner")
            await crash(inner, "x")
            await crash(inner, "x")
            await trio.sleep_forever()
    (error,) = caught
    assert [(r.child, r.time) for r in error.history] == [("inner", 0.0)]
    assert error.history[0].error is not None
    assert error.history[0].error.startswith("RestartIntensityExceeded: Supervisor 'inner'")
    assert journal[-3:] == ["stop x", "stop y", "stop z"]  # x crashed, then y, then z


async def test_a_nested_supervisor_shares_the_parents_dead_letters_unless_given_its_own(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    root = Supervisor([ChildSpec("inner", inner_supervisor, journal)], name="root")
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, root)
        inner = sup.supervisor("inner")
        assert inner.dead_letter_log is sup.dead_letter_log
        await sup.stop()
        await inner.ref("x").tell("late")
    assert sup.dead_letters() == [DeadLetter(recipient="x", message="late", reason="stopped")]


# -- mailboxes, redelivery, poison, late replies ---------------------------------------


async def test_a_restarted_actor_keeps_its_mailbox_and_its_ref(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([])
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        gate = trio.Event()
        crashed: list[BaseException] = []

        async def crash_later() -> None:
            with pytest.raises(ActorCrashed) as info:
                await ref.ask("crash-after-gate")
            crashed.append(info.value)

        class GatedCrash(Probe):
            async def handle(self, message: Any) -> Any:
                if message == "crash-after-gate":
                    await gate.wait()
                    raise RuntimeError("gated crash")
                return await super().handle(message)

        await sup.start_child(ChildSpec("g", GatedCrash, journal, mailbox_size=4))
        ref = sup.ref("g")
        cell = ref.cell
        nursery.start_soon(crash_later)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("m1")
        await ref.tell("m2")
        assert ref.statistics().mailbox_depth == 2
        first_instance = cell.instance
        del journal[:]
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(crashed) == 1
        assert journal == ["stop g", "start g", "g: m1", "g: m2"]
        assert sup.ref("g") is ref
        assert ref.cell is cell
        assert cell.instance is not first_instance
        assert ref.statistics().restarts == 1
        assert sup.dead_letters() == []
        await sup.stop()


async def test_a_tell_that_crashed_is_dead_lettered_and_the_mailbox_survives(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], max_restarts=1, name="root")
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        gate = trio.Event()
        flaky = Flaky(fails=1)
        await sup.ref("a").tell(gate)  # hold a busy so the rest queues up behind it
        await sup.ref("a").tell(flaky)
        await sup.ref("a").tell("after")
        del journal[:]
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert flaky.tries == 1  # handled once, never again
        assert journal == ["stop a", "start a", "a: after"]
        assert sup.dead_letters() == [DeadLetter(recipient="a", message=flaky, reason="crashed")]
        assert sup.ref("a").statistics().restarts == 1
        assert kinds(sup)[-3:] == ["ChildCrashed a", "DeadLettered a", "ChildRestarted a"]
        assert sup.statistics().state == "running"  # one crash, one restart: within budget
        await sup.stop()


async def test_one_bad_tell_does_not_exhaust_a_budget_of_two_restarts(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The reported bug: the bad message was redelivered up to 3 times, so one tell
    # cost three restarts and broke max_restarts=2.
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], max_restarts=2)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        await sup.ref("a").tell(Poison())
        await trio.testing.wait_all_tasks_blocked()
        assert sup.statistics().state == "running"
        assert sup.statistics().restarts == 1
        assert journal.count("start a") == 2
        await sup.stop()


async def test_an_ask_that_crashed_fails_at_once_and_is_never_handled_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], max_redeliveries=3)  # asks: still never
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        flaky = Flaky(fails=1)
        with pytest.raises(
            ActorCrashed,
            match=r"^Actor 'a' crashed handling the message: RuntimeError: flaky try 1$",
        ) as info:
            await sup.ref("a").ask(flaky)
        assert str(info.value.__cause__) == "flaky try 1"
        await trio.testing.wait_all_tasks_blocked()
        assert flaky.tries == 1
        assert sup.dead_letters() == []  # the asker holds the error: not lost
        assert sup.ref("a").statistics().restarts == 1
        assert await sup.ref("a").ask("next") == (Probe.instances, "next")
        await sup.stop()


async def test_max_redeliveries_gives_at_least_once_delivery(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], max_redeliveries=2, max_restarts=5)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        flaky = Flaky(fails=2)
        await sup.ref("a").tell(flaky)
        await sup.ref("a").tell("after")
        await trio.testing.wait_all_tasks_blocked()
        assert flaky.tries == 3  # crashed twice, handed out again twice, then handled
        assert journal[-2:] == ["a: Flaky(2)", "a: after"]
        assert sup.ref("a").statistics().restarts == 2  # every crash is a restart
        assert sup.dead_letters() == []
        await sup.stop()


async def test_a_message_that_exhausts_its_redeliveries_goes_to_dead_letters_as_poison(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], max_redeliveries=2, max_restarts=10, name="root")
    poison = Poison()
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        events = sup.subscribe_events()
        await sup.ref("a").tell(poison)
        await sup.ref("a").tell("after")
        await trio.testing.wait_all_tasks_blocked()
        assert journal[-1] == "a: after"
        assert sup.dead_letters() == [DeadLetter(recipient="a", message=poison, reason="poison")]
        assert sup.ref("a").statistics().restarts == 3
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        assert [type(e).__name__ for e in seen] == [
            "ChildCrashed",
            "ChildRestarted",
            "ChildCrashed",
            "ChildRestarted",
            "ChildCrashed",
            "DeadLettered",
            "ChildRestarted",
        ]
        assert seen[5] == DeadLettered(
            supervisor="root", child="a", time=0.0, reason="poison", message=poison
        )
        await sup.stop()


async def test_max_redeliveries_per_child_overrides_the_supervisor(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [
            spec("plain", journal),  # inherits the supervisor's 1
            spec("never", journal, max_redeliveries=0),
            spec("twice", journal, max_redeliveries=2),
        ],
        max_redeliveries=1,
        max_restarts=10,
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        jobs = {name: Flaky(fails=2) for name in ("plain", "never", "twice")}
        for name, job in jobs.items():
            await sup.ref(name).tell(job)
            await trio.testing.wait_all_tasks_blocked()
        assert {name: job.tries for name, job in jobs.items()} == {
            "plain": 2,
            "never": 1,
            "twice": 3,
        }
        assert sup.dead_letters() == [
            DeadLetter(recipient="plain", message=jobs["plain"], reason="poison"),
            DeadLetter(recipient="never", message=jobs["never"], reason="crashed"),
        ]
        assert [sup.ref(n).statistics().restarts for n in jobs] == [2, 1, 2]
        assert journal[-1] == "twice: Flaky(2)"
        await sup.stop()


# OTP's supervisor_SUITE (one_for_one, one_for_all, rest_for_one): a child that dies
# costs the supervisor one restart of its intensity, whichever group is restarted,
# and a third death within the period of intensity {2, 3600} shuts the supervisor
# down. Here each death is one bad *tell*, which must not be handed out again.
OTP_STARTS = {
    Strategy.ONE_FOR_ONE: {"a": 0, "b": 1, "c": 0},
    Strategy.ONE_FOR_ALL: {"a": 1, "b": 1, "c": 1},
    Strategy.REST_FOR_ONE: {"a": 0, "b": 1, "c": 1},
}


@pytest.mark.parametrize("strategy", list(Strategy))
async def test_otp_one_bad_message_is_one_restart_under_each_strategy(
    autojump_clock: trio.abc.Clock, strategy: Strategy
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("b", journal), spec("c", journal)],
        strategy=strategy,
        max_restarts=2,
        max_seconds=3600.0,
        name="sup",
    )
    bad = [Poison(), Poison(), Poison()]
    with pytest.RaisesGroup(
        pytest.RaisesExc(
            RestartIntensityExceeded,
            match=(
                r"^Supervisor 'sup' gave up: 3 restarts within 3600\.0 s exceed max_restarts=2 "
                r"\(last: child 'b' crashed: RuntimeError: poison\); all children were "
                r"stopped\.$"
            ),
        )
    ):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, supervisor)
            for crashes in (1, 2):
                gate = trio.Event()
                await sup.ref("b").tell(gate)
                await sup.ref("b").tell(bad[crashes - 1])
                await sup.ref("b").tell(f"after {crashes}")
                for name in "ac":
                    await sup.ref(name).tell(f"to {name} {crashes}")
                gate.set()
                await trio.testing.wait_all_tasks_blocked()
                assert sup.statistics().state == "running"
                starts = {n: journal.count(f"start {n}") - 1 for n in "abc"}
                assert starts == {n: k * crashes for n, k in OTP_STARTS[strategy].items()}
                restarted = [e.child for e in sup.events() if isinstance(e, ChildRestarted)]
                assert sorted(restarted) == sorted(
                    n for n, k in OTP_STARTS[strategy].items() for _ in range(k * crashes)
                )
                # Nothing queued was lost: the messages after the bad one were handled.
                assert {f"b: after {crashes}", f"a: to a {crashes}", f"c: to c {crashes}"} <= set(
                    journal
                )
            assert sup.dead_letters() == [
                DeadLetter(recipient="b", message=bad[0], reason="crashed"),
                DeadLetter(recipient="b", message=bad[1], reason="crashed"),
            ]
            await sup.ref("b").tell(bad[2])  # the third death within the period
            await trio.sleep_forever()
    assert supervisor.statistics().state == "failed"
    assert [letter.message for letter in supervisor.dead_letters()][:3] == bad


async def test_the_crashing_tell_of_a_child_that_is_not_restarted_is_dead_lettered(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal, restart=Restart.TEMPORARY)])
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        gate = trio.Event()
        await sup.ref("a").tell(gate)
        await sup.ref("a").tell("crash")
        await sup.ref("a").tell("queued")
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sup.dead_letters() == [
            DeadLetter(recipient="a", message="crash", reason="crashed"),
            DeadLetter(recipient="a", message="queued", reason="stopped"),
        ]
        await sup.stop()


async def test_a_late_reply_after_a_restart_goes_to_dead_letters(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal)], backoff=Backoff(base_s=2.0, factor=2.0, max_s=8.0, jitter=0.0)
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        ref = sup.ref("a")
        with pytest.raises(ActorCrashed):
            await ref.ask("crash")
        with pytest.raises(AskTimeout):
            await ref.ask("queued during backoff", timeout_s=1.0)
        assert trio.current_time() == 1.0
        await trio.testing.wait_all_tasks_blocked()
        assert (await ref.ask("next"))[1] == "next"
        assert trio.current_time() == 2.0
        assert sup.dead_letters() == [
            DeadLetter(
                recipient="a",
                message=(Probe.instances, "queued during backoff"),
                reason="late-reply",
            )
        ]
        assert ref.statistics().state == "running"
        assert ref.statistics().restarts == 1
        await sup.stop()


# -- backoff -------------------------------------------------------------------------------


async def test_backoff_delays_are_exact_on_the_virtual_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal)],
        max_restarts=10,
        backoff=Backoff(base_s=1.0, factor=2.0, max_s=3.0, jitter=0.0),
        name="root",
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        ref = sup.ref("a")
        for _ in range(3):  # queued behind each backoff: waits 1, 2, 3 (capped)
            with pytest.raises(ActorCrashed):
                await ref.ask("crash")
        await ref.ask("ok")
        assert trio.current_time() == 6.0
        # It handled messages since: the next crash starts a new streak.
        with pytest.raises(ActorCrashed):
            await ref.ask("crash")
        await ref.ask("ok")
        assert trio.current_time() == 7.0
        await sup.stop()
    restarts = [e for e in sup.events() if isinstance(e, ChildRestarted)]
    assert [(e.time, e.delay_s) for e in restarts] == [
        (1.0, 1.0),
        (3.0, 2.0),
        (6.0, 3.0),
        (7.0, 1.0),
    ]
    assert restarts[0] == ChildRestarted(
        supervisor="root",
        child="a",
        time=1.0,
        restarts=1,
        delay_s=1.0,
        error="RuntimeError: crash in a",
    )


async def test_seeded_jitter_is_reproducible(autojump_clock: trio.abc.Clock) -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=10.0, jitter=0.5, seed=7)
    rng = backoff.make_rng()
    expected = [backoff.delay_s(n, rng.random()) for n in range(3)]
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], backoff=backoff, max_restarts=10)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        for _ in range(3):
            with pytest.raises(ActorCrashed):
                await sup.ref("a").ask("crash")
        await sup.ref("a").ask("ok")
        await sup.stop()
    delays = [e.delay_s for e in sup.events() if isinstance(e, ChildRestarted)]
    assert delays == expected
    assert trio.current_time() == pytest.approx(sum(expected))


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_group_backoff_waits_once_with_every_member_down(
    autojump_clock: trio.abc.Clock, strategy: Strategy
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("b", journal)],
        strategy=strategy,
        backoff=Backoff(base_s=2.0, max_s=2.0, jitter=0.0),
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        del journal[:]
        with pytest.raises(ActorCrashed):
            await sup.ref("a").ask("crash")
        await trio.testing.wait_all_tasks_blocked()
        assert journal == ["stop a", "stop b"]
        await sup.ref("b").ask("ok")
        assert trio.current_time() == 2.0
        assert journal == ["stop a", "stop b", "start a", "start b", "b: ok"]
        await sup.stop()


async def test_stop_during_backoff_is_prompt(autojump_clock: trio.abc.Clock) -> None:
    journal: Journal = []
    for strategy in Strategy:
        supervisor = Supervisor(
            [spec("a", journal)], strategy=strategy, backoff=Backoff(base_s=60.0, max_s=60.0)
        )
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, supervisor)
            began = trio.current_time()
            await crash(sup, "a")
            await sup.stop()
            assert trio.current_time() == began
        assert sup.ref("a").statistics().state == "stopped"


@pytest.mark.parametrize("redeliveries", [0, 1])
@pytest.mark.parametrize("restart", [Restart.PERMANENT, Restart.TRANSIENT])
@pytest.mark.parametrize("strategy", list(Strategy))
async def test_stopping_a_ref_while_its_child_waits_out_a_backoff(
    autojump_clock: trio.abc.Clock, strategy: Strategy, restart: Restart, redeliveries: int
) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal, restart=restart)],
        strategy=strategy,
        backoff=Backoff(base_s=10.0, max_s=10.0, jitter=0.0),
        max_redeliveries=redeliveries,
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        ref = sup.ref("a")
        flaky = Flaky(fails=1)
        await ref.tell(flaky)  # crashes (kept for redelivery if asked), 10 s backoff
        await ref.tell("queued")
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()  # returns at once: the child is down already
        assert trio.current_time() == 0.0
        # Dead at the crash, or (redelivery) back at the head of the mailbox: dead first.
        assert [(d.message, d.reason) for d in sup.dead_letters()] == [
            (flaky, "stopped" if redeliveries else "crashed"),
            ("queued", "stopped"),
        ]
        await trio.sleep(10.0)
        await trio.testing.wait_all_tasks_blocked()
        if restart is Restart.PERMANENT:  # a normal exit: back with a fresh mailbox
            assert (await ref.ask("again"))[1] == "again"
            assert flaky.tries == 1
        else:
            assert ref.statistics().state == "stopped"
            assert sup.events()[-1] == ChildStopped(
                supervisor="supervisor",
                child="a",
                time=10.0,
                reason="normal",
            )
        await sup.stop()


# -- start_child, stop_child, introspection --------------------------------------------------


async def test_start_child_and_stop_child(autojump_clock: trio.abc.Clock) -> None:
    journal: Journal = []
    supervisor = Supervisor([spec("a", journal)], name="root")
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        await sup.start_child(spec("b", journal))
        assert (await sup.ref("b").ask("hi"))[1] == "hi"
        with pytest.raises(
            ValueError,
            match=(
                r"^Supervisor 'root' already has a running child named 'b'; "
                r"stop it first or pick another name\.$"
            ),
        ):
            await sup.start_child(spec("b", journal))
        await sup.stop_child("b")
        assert sup.ref("b").statistics().state == "stopped"
        assert sup.events()[-1] == ChildStopped(
            supervisor="root", child="b", time=0.0, reason="stop_child"
        )
        await sup.start_child(spec("b", journal))  # replaces the stopped one
        assert sup.ref("b").statistics().state == "running"

        class BadStart(Probe):
            async def on_start(self) -> None:
                raise OSError("no socket")

        with pytest.raises(OSError, match=r"^no socket$"):
            await sup.start_child(ChildSpec("c", BadStart, journal))
        with pytest.raises(LookupError):
            sup.ref("c")
        with pytest.raises(
            LookupError,
            match=r"^Supervisor 'root' has no child named 'nope' \(children: 'a', 'b'\)\.$",
        ):
            await sup.stop_child("nope")
        del journal[:]
        await sup.stop()
    assert journal == ["stop b", "stop a"]
    with pytest.raises(
        RuntimeError,
        match=(
            r"^Supervisor 'root' is stopped; start_child needs a running supervisor "
            r"\(await nursery\.start\(sup\.run\) first\)\.$"
        ),
    ):
        await sup.start_child(spec("late", journal))


async def test_statistics_and_event_stream(autojump_clock: trio.abc.Clock) -> None:
    journal: Journal = []
    supervisor = Supervisor(
        [spec("a", journal), spec("b", journal, mailbox_size=8)],
        strategy=Strategy.REST_FOR_ONE,
        name="root",
    )
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        stream = sup.subscribe_events()
        await crash(sup, "a")
        await sup.ref("b").ask("x")
        assert sup.statistics() == SupervisorStatistics(
            name="root",
            state="running",
            strategy=Strategy.REST_FOR_ONE,
            children=(
                ActorStatistics(
                    name="a",
                    state="running",
                    mailbox_depth=0,
                    mailbox_capacity=1024,
                    handled=0,
                    restarts=1,
                    last_error="RuntimeError: crash in a",
                ),
                ActorStatistics(
                    name="b",
                    state="running",
                    mailbox_depth=0,
                    mailbox_capacity=8,
                    handled=1,
                    restarts=1,
                    last_error=None,
                ),
            ),
            restarts=2,
            dead_letters=0,
        )
        assert await stream.receive() == ChildCrashed(
            supervisor="root", child="a", time=0.0, error="RuntimeError: crash in a"
        )
        assert await stream.receive() == ChildRestarted(
            supervisor="root",
            child="a",
            time=0.0,
            restarts=1,
            delay_s=0.0,
            error=("RuntimeError: crash in a"),
        )
        assert await stream.receive() == ChildRestarted(
            supervisor="root", child="b", time=0.0, restarts=1, delay_s=0.0, error=None
        )
        await sup.stop()
    assert repr(sup) == "<Supervisor 'root' (stopped, 2 children)>"


async def test_stop_from_inside_a_child(autojump_clock: trio.abc.Clock) -> None:
    journal: Journal = []
    holder: list[Supervisor] = []

    class Quitter(Probe):
        async def handle(self, message: Any) -> Any:
            if message == "quit":
                await holder[0].stop()
            return await super().handle(message)

    async with trio.open_nursery() as nursery:
        sup = await start(
            nursery, Supervisor([spec("a", journal), ChildSpec("q", Quitter, journal)])
        )
        holder.append(sup)
        await sup.ref("q").tell("quit")
    assert journal[-2:] == ["stop q", "stop a"]
    assert sup.statistics().state == "stopped"


async def test_a_restart_whose_start_fails_counts_as_a_crash(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    starts = [0]

    class FailsSecondStart(Probe):
        async def on_start(self) -> None:
            starts[0] += 1
            await super().on_start()
            if starts[0] == 2:
                raise OSError("second start fails")

    for strategy in Strategy:
        starts[0] = 0
        supervisor = Supervisor(
            [ChildSpec("a", FailsSecondStart, journal), spec("b", journal)],
            strategy=strategy,
            max_restarts=5,
        )
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, supervisor)
            await crash(sup, "a")
            assert sup.ref("a").statistics().restarts == 1  # the failed attempt is not one
            assert [e.error for e in sup.events() if isinstance(e, ChildCrashed)] == [
                "RuntimeError: crash in a",
                "OSError: second start fails",
            ]
            assert (await sup.ref("a").ask("ok"))[1] == "ok"
            await sup.stop()


# -- cancellation from outside at any point ---------------------------------------------------


def tree(journal: Journal, strategy: Strategy) -> Supervisor:
    def inner() -> Supervisor:
        return Supervisor([spec("x", journal, start_s=1.0)], name="inner", max_restarts=1)

    return Supervisor(
        [
            spec("a", journal, start_s=1.0),
            ChildSpec("inner", inner),
            spec("b", journal, start_s=1.0),
        ],
        strategy=strategy,
        max_restarts=20,
        backoff=Backoff(base_s=1.0, max_s=1.0, jitter=0.0),
        name="root",
    )


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("cancel_at", [0.5 + i for i in range(14)])
async def test_cancellation_from_outside_at_any_point_leaves_nothing_behind(
    autojump_clock: trio.abc.Clock, strategy: Strategy, cancel_at: float
) -> None:
    journal: Journal = []
    supervisor = tree(journal, strategy)
    before = all_tasks()
    sent: list[object] = []

    async def scenario(nursery: trio.Nursery) -> None:
        sup = await start(nursery, supervisor)  # t=3
        with pytest.raises(ActorCrashed):
            await sup.ref("b").ask("crash")  # backoff 1 s, restart(s) with slow starts
        await sup.ref("b").ask("ok")
        blocker = trio.Event()
        await sup.ref("a").tell(blocker)  # a blocks in a handler forever
        sent.append(blocker)
        await sup.ref("a").tell("queued")
        sent.append("queued")
        inner = sup.supervisor("inner")
        with pytest.raises(ActorCrashed):
            await inner.ref("x").ask("crash")
        await inner.ref("x").ask("ok")
        with pytest.raises(ActorCrashed):
            await inner.ref("x").ask("crash")  # inner gives up, root restarts it
        await trio.sleep_forever()

    with trio.move_on_after(cancel_at) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scenario, nursery)
    assert scope.cancelled_caught
    assert all_tasks() == before
    for name in ("a", "b", "x"):
        assert journal.count(f"start {name}") == journal.count(f"stop {name}"), journal
    state = supervisor.statistics()
    assert state.state == "stopped"
    assert {s.state for s in state.children} <= {"stopped"}
    # Nothing sent to a is ever handled (it blocks first): all of it is dead.
    dead = [d.message for d in supervisor.dead_letters() if d.recipient == "a"]
    assert dead == sent
    if state.children:
        await supervisor.ref("a").tell("after")
        assert supervisor.dead_letters()[-1] == DeadLetter(
            recipient="a", message="after", reason="stopped"
        )


# -- definitions -------------------------------------------------------------------------------


def test_child_spec_validation() -> None:
    journal: Journal = []
    with pytest.raises(ValueError, match=r"^ChildSpec: name must be a non-empty string, got ''\.$"):
        ChildSpec("", Probe)
    with pytest.raises(
        TypeError,
        match=(
            r"^ChildSpec 'a': factory must be a callable that builds the child, got a Probe "
            r"instance; pass Probe, not Probe\(\.\.\.\) \(the supervisor needs a fresh "
            r"instance for every restart\)\.$"
        ),
    ):
        ChildSpec("a", Probe(journal))  # type: ignore[arg-type]
    for nested in (Supervisor([]), DynamicSupervisor(ChildSpec("w", Probe, journal))):
        kind = type(nested).__name__
        with pytest.raises(
            TypeError,
            match=(
                rf"^ChildSpec 'a': factory must be a callable that builds the child, got a "
                rf"{kind} instance; pass {kind}, not {kind}\(\.\.\.\) \(the supervisor needs "
                r"a fresh instance for every restart\)\.$"
            ),
        ):
            ChildSpec("a", nested)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=(
            r"^ChildSpec 'a': factory must be callable \(an Actor subclass or a function "
            r"returning an Actor or Supervisor\), got 42\.$"
        ),
    ):
        ChildSpec("a", 42)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=(
            r"^ChildSpec 'a': restart must be a Restart member \(Restart\.PERMANENT, "
            r"TRANSIENT or TEMPORARY\), got 'permanent'\.$"
        ),
    ):
        ChildSpec("a", Probe, restart="permanent")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^ChildSpec 'a': mailbox_size must be an int >= 0 or math\.inf, got 1\.5\.$",
    ):
        ChildSpec("a", Probe, mailbox_size=1.5)
    with pytest.raises(
        ValueError,
        match=(
            r"^ChildSpec 'a': max_redeliveries must be an int >= 0, got -1\. Use 0 \(the "
            r"default\) to dead-letter a message that crashed its handler, or N > 0 to hand it "
            r"to the restarted actor up to N more times\.$"
        ),
    ):
        ChildSpec("a", Probe, max_redeliveries=-1)
    ok = ChildSpec("a", Probe, journal, restart=Restart.TRANSIENT, mailbox_size=math.inf)
    assert ok.args == (journal,)
    assert ok.max_redeliveries is None  # the supervisor's max_redeliveries applies


def test_supervisor_validation() -> None:
    journal: Journal = []
    with pytest.raises(
        ValueError,
        match=r"^Supervisor 's': two children are named 'a'; child names must be unique\.$",
    ):
        Supervisor([spec("a", journal), spec("a", journal)], name="s")
    with pytest.raises(
        ValueError, match=r"^Supervisor 's': max_restarts must be an int >= 0, got -1\.$"
    ):
        Supervisor([], max_restarts=-1, name="s")
    with pytest.raises(
        ValueError,
        match=r"^Supervisor 's': max_seconds must be a finite number > 0, got 0\.$",
    ):
        Supervisor([], max_seconds=0, name="s")
    for bad in (-1, True, 1.0, "2"):
        with pytest.raises(
            ValueError,
            match=(
                rf"^Supervisor 's': max_redeliveries must be an int >= 0, got {re.escape(repr(bad))}\. "
                r"Use 0 \(the default\) to dead-letter a message that crashed its handler, or "
                r"N > 0 to hand it to the restarted actor up to N more times\.$"
            ),
        ):
            Supervisor([], max_redeliveries=bad, name="s")  # type: ignore[arg-type]
    assert Supervisor([], name="s").max_redeliveries == 0
    with pytest.raises(
        TypeError, match=r"^Supervisor 's': children must be ChildSpec objects, got 'a'\.$"
    ):
        Supervisor(["a"], name="s")  # type: ignore[list-item]
    with pytest.raises(
        LookupError,
        match=(
            r"^Supervisor 's' has not started yet; await nursery\.start\(sup\.run\) "
            r"before asking for refs\.$"
        ),
    ):
        Supervisor([spec("a", journal)], name="s").ref("a")


async def test_a_supervisor_runs_once_at_a_time() -> None:
    supervisor = Supervisor([], name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with pytest.raises(
            RuntimeError,
            match=(
                r"^Supervisor 's' is already running; a supervisor runs once at a time "
                r"\(build another one, or give ChildSpec a factory\)\.$"
            ),
        ):
            await supervisor.run()
        await supervisor.stop()
    async with trio.open_nursery() as nursery:  # and may run again once stopped
        await nursery.start(supervisor.run)
        await supervisor.stop()


async def test_a_factory_returning_something_else_crashes_the_start() -> None:
    not_a_factory: Any = lambda: "nope"  # noqa: E731
    supervisor = Supervisor([ChildSpec("a", not_a_factory)], name="s")
    async with trio.open_nursery() as nursery:
        with pytest.raises(
            TypeError,
            match=(
                r"^ChildSpec 'a': factory returned 'nope'; it must return an Actor "
                r"or a Supervisor\.\nwhile starting child 'a' of supervisor 's'$"
            ),
        ):
            await nursery.start(supervisor.run)


async def test_max_redeliveries_on_a_nested_supervisors_spec_is_refused() -> None:
    journal: Journal = []
    spec_ = ChildSpec("inner", inner_supervisor, journal, max_redeliveries=1)
    supervisor = Supervisor([spec_], name="s")
    async with trio.open_nursery() as nursery:
        with pytest.raises(
            TypeError,
            match=(
                r"^ChildSpec 'inner': max_redeliveries applies to actors, but the factory built "
                r"a Supervisor \(it has no mailbox\); pass max_redeliveries to that "
                r"Supervisor\.\nwhile starting child 'inner' of supervisor 's'$"
            ),
        ):
            await nursery.start(supervisor.run)


async def test_functools_partial_factories_work(autojump_clock: trio.abc.Clock) -> None:
    journal: Journal = []
    supervisor = Supervisor([ChildSpec("a", functools.partial(Probe, journal, start_s=1.0))])
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, supervisor)
        assert trio.current_time() == 1.0
        await sup.stop()
