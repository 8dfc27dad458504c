"""DynamicSupervisor, child management, shutdown grace and exit reasons."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from flujo_actors.actors import (
    Actor,
    ActorExit,
    ChildCounts,
    ChildInfo,
    ChildRestarted,
    ChildSpec,
    ChildStopped,
    DynamicSupervisor,
    Restart,
    Strategy,
    Supervisor,
)
from flujo_actors.errors import (
    ActorCrashed,
    ActorStopped,
    MaxChildrenExceeded,
    RestartIntensityExceeded,
)

Journal = list[str]


class Worker(Actor):
    """Messages: "crash" raises, "exit"/"shutdown"/"bye" exit with that reason, else echoed."""

    def __init__(self, journal: Journal, tag: object = None, stop_s: float = 0.0) -> None:
        self.journal = journal
        self.tag = tag
        self.stop_s = stop_s

    async def on_start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.journal.append(f"stopping {self.name}")
        await trio.sleep(self.stop_s)
        self.journal.append(f"stopped {self.name}")

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"crash in {self.name}")
        if message == "exit":
            self.exit()
        if message in ("shutdown", "bye"):
            self.exit(message)
        if message == "wait":
            await trio.sleep_forever()
        self.journal.append(f"{self.name}: {message}")
        return (self.tag, message)


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


# -- DynamicSupervisor ------------------------------------------------------------


async def test_start_child_builds_each_child_from_the_spec_with_its_own_args() -> None:
    journal: Journal = []
    dyn = DynamicSupervisor(ChildSpec("conn", Worker, journal), name="server")
    async with trio.open_nursery() as nursery:
        await nursery.start(dyn.run)
        one = await dyn.start_child("a")
        two = await dyn.start_child("b")
        named = await dyn.start_child("c", name="special")
        assert (one.name, two.name, named.name) == ("conn-1", "conn-2", "special")
        assert await one.ask("hi") == ("a", "hi")
        assert await two.ask("hi") == ("b", "hi")
        assert await named.ask("hi") == ("c", "hi")
        assert dyn.lookup("conn-2") is two
        assert [c.name for c in dyn.which_children()] == ["conn-1", "conn-2", "special"]
        with pytest.raises(
            ValueError,
            match=r"^Supervisor 'server' already has a running child named 'special'; stop it "
            r"first or pick another name\.$",
        ):
            await dyn.start_child("d", name="special")
        await dyn.stop()
    assert journal[-6:] == [
        "stopping special",
        "stopped special",
        "stopping conn-2",
        "stopped conn-2",
        "stopping conn-1",
        "stopped conn-1",
    ]


async def test_max_children_refuses_clearly_and_frees_a_place_when_one_stops() -> None:
    journal: Journal = []
    dyn = DynamicSupervisor(
        ChildSpec("w", Worker, journal, restart=Restart.TEMPORARY), max_children=2
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(dyn.run)
        first = await dyn.start_child()
        await dyn.start_child()
        with pytest.raises(
            MaxChildrenExceeded,
            match=r"^DynamicSupervisor 'w' already runs max_children=2 children; stop one "
            r"first, or raise max_children\.$",
        ):
            await dyn.start_child()
        with pytest.raises(ActorStopped):
            await first.ask("exit")  # a temporary child stops for good: one place free
        await settle()
        assert [c.name for c in dyn.which_children()] == ["w-2"]
        third = await dyn.start_child()
        assert third.name == "w-3"  # a refused start takes no number; w-1 is not reused
        assert dyn.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)
        await dyn.stop()


async def test_each_dynamic_child_restarts_on_its_own_under_the_supervisor_intensity(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: Journal = []
    dyn = DynamicSupervisor(ChildSpec("w", Worker, journal), max_restarts=2, max_seconds=10.0)
    with pytest.RaisesGroup(
        pytest.RaisesExc(RestartIntensityExceeded, match=r"^Supervisor 'w' gave up: 3 restarts")
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(dyn.run)
            a = await dyn.start_child("a")
            b = await dyn.start_child("b")
            with pytest.raises(ActorCrashed):
                await a.ask("crash")
            await settle()
            assert await a.ask("again") == ("a", "again")  # same ref, new instance
            assert [(c.name, c.restarts, c.state) for c in dyn.which_children()] == [
                ("w-1", 1, "running"),
                ("w-2", 0, "running"),
            ]
            assert journal.count("start w-2") == 1  # one_for_one: the sibling stayed up
            with pytest.raises(ActorCrashed):
                await b.ask("crash")
            await settle()
            with pytest.raises(ActorCrashed):
                await b.ask("crash")
            await trio.sleep_forever()
    assert dyn.statistics().state == "failed"


async def test_dynamic_transient_child_restarts_after_a_crash_only() -> None:
    journal: Journal = []
    dyn = DynamicSupervisor(ChildSpec("t", Worker, journal, restart=Restart.TRANSIENT))
    async with trio.open_nursery() as nursery:
        await nursery.start(dyn.run)
        ref = await dyn.start_child()
        with pytest.raises(ActorCrashed):
            await ref.ask("crash")
        await settle()
        assert dyn.which_children()[0].restarts == 1
        await ref.tell("exit")
        await settle()
        assert dyn.which_children() == ()
        stopped = [e for e in dyn.events() if isinstance(e, ChildStopped)]
        assert [(e.child, e.reason) for e in stopped] == [("t-1", "normal")]
        await dyn.stop()


def test_dynamic_supervisor_options_are_checked() -> None:
    template = ChildSpec("w", Worker, [])
    with pytest.raises(
        ValueError,
        match=r"^DynamicSupervisor 'dynamic supervisor': max_children must be an int >= 1 or "
        r"None \(no limit\), got 0\.$",
    ):
        DynamicSupervisor(template, max_children=0)
    with pytest.raises(
        ValueError,
        match=r"^DynamicSupervisor 'p': strategy= is not an option; a dynamic supervisor "
        r"restarts each child on its own \(ONE_FOR_ONE\) and starts its children with "
        r"start_child\(\*args\)\.$",
    ):
        DynamicSupervisor(template, name="p", strategy=Strategy.ONE_FOR_ALL)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError,
        match=r"^DynamicSupervisor 'dynamic supervisor': spec must be a ChildSpec \(the "
        r"template for every child\), got <class '.*Worker'>\.$",
    ):
        DynamicSupervisor(Worker)  # type: ignore[arg-type]


async def test_dynamic_start_child_needs_a_running_supervisor_and_actor_children() -> None:
    dyn = DynamicSupervisor(ChildSpec("w", Worker, []))
    with pytest.raises(
        RuntimeError,
        match=r"^Supervisor 'w' is new; starting a child needs a running supervisor "
        r"\(await nursery.start\(sup.run\) first\)\.$",
    ):
        await dyn.start_child()
    nested = DynamicSupervisor(ChildSpec("s", lambda: Supervisor(name="inner")))
    async with trio.open_nursery() as nursery:
        await nursery.start(nested.run)
        with pytest.raises(
            TypeError,
            match=r"^DynamicSupervisor 's': the factory of spec 's' built a Supervisor; a "
            r"dynamic supervisor's children must be Actors \(nest the DynamicSupervisor in a "
            r"Supervisor instead\)\.$",
        ):
            await nested.start_child()
        assert nested.which_children() == ()
        with pytest.raises(
            TypeError,
            match=r"^DynamicSupervisor 's': restart_child\('s-1'\) is not supported; a dynamic "
            r"supervisor forgets children that stopped for good \(start a new one with "
            r"start_child\(\*args\)\)\.$",
        ):
            await nested.restart_child("s-1")
        nursery.cancel_scope.cancel()


async def test_a_dynamic_supervisor_nests_in_a_static_one_and_is_found_by_path() -> None:
    journal: Journal = []
    root = Supervisor(
        [
            ChildSpec("front", Worker, journal),
            ChildSpec("pool", DynamicSupervisor, ChildSpec("worker", Worker, journal)),
        ],
        name="root",
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        pool = root.supervisor("pool")
        assert isinstance(pool, DynamicSupervisor)
        for n in range(3):
            await pool.start_child(n)
        ref = root.lookup("pool/worker-3")
        assert await ref.ask("x") == (2, "x")
        assert root.tree().splitlines() == [
            "supervisor 'root' [one_for_one] running, restarts=0",
            "├── actor 'front' running, restarts=0, mailbox=0/1024",
            "└── supervisor 'worker' [one_for_one] running, restarts=0 (as 'pool')",
            "    ├── actor 'worker-1' running, restarts=0, mailbox=0/1024",
            "    ├── actor 'worker-2' running, restarts=0, mailbox=0/1024",
            "    └── actor 'worker-3' running, restarts=0, mailbox=0/1024",
        ]
        await root.stop()


# -- child management on every supervisor ---------------------------------------


async def test_which_count_restart_and_delete_children() -> None:
    journal: Journal = []
    sup = Supervisor(
        [ChildSpec("a", Worker, journal), ChildSpec("b", Worker, journal, mailbox_size=4)],
        name="root",
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref_b = sup.ref("b")
        await sup.stop_child("b")
        assert sup.which_children() == (
            ChildInfo(
                name="a",
                kind="actor",
                state="running",
                restarts=0,
                mailbox_depth=0,
                restart=Restart.PERMANENT,
            ),
            ChildInfo(
                name="b",
                kind="actor",
                state="stopped",
                restarts=0,
                mailbox_depth=0,
                restart=Restart.PERMANENT,
            ),
        )
        assert sup.count_children() == ChildCounts(specs=2, active=1, supervisors=0, workers=2)
        with pytest.raises(
            LookupError,
            match=r"^lookup\('b'\) in supervisor 'root': child 'b' of supervisor 'root' has "
            r"stopped for good; restart_child\('b'\) brings it back\.$",
        ):
            sup.lookup("b")
        with pytest.raises(
            ValueError,
            match=r"^Supervisor 'root': child 'a' is running; restart_child restarts a stopped "
            r"child \(await sup.stop_child\('a'\) first\)\.$",
        ):
            await sup.restart_child("a")
        await sup.restart_child("b")
        assert await ref_b.ask("back") == (None, "back")  # the old ref works again
        assert [c.name for c in sup.which_children()] == ["a", "b"]  # same place
        with pytest.raises(
            ValueError,
            match=r"^Supervisor 'root': child 'b' is running; delete_child deletes a stopped "
            r"child \(await sup.stop_child\('b'\) first\)\.$",
        ):
            await sup.delete_child("b")
        await sup.stop_child("b")
        await sup.delete_child("b")
        assert [c.name for c in sup.which_children()] == ["a"]
        with pytest.raises(
            LookupError, match=r"^Supervisor 'root' has no child named 'b' \(children: 'a'\)\.$"
        ):
            await sup.delete_child("b")
        await ref_b.tell("into the void")
        assert sup.dead_letters()[-1].message == "into the void"
        await sup.start_child(ChildSpec("b", Worker, journal))  # the name is free again
        await sup.stop()
    with pytest.raises(
        RuntimeError,
        match=r"^Supervisor 'root' is stopped; restarting child 'a' needs a running "
        r"supervisor \(await nursery.start\(sup.run\) first\)\.$",
    ):
        await sup.restart_child("a")


async def test_a_failing_restart_child_raises_and_leaves_it_stopped() -> None:
    class FailsSecondStart(Actor):
        starts = 0

        async def on_start(self) -> None:
            FailsSecondStart.starts += 1
            if FailsSecondStart.starts > 1:
                raise OSError("port taken")

        async def handle(self, message: Any) -> Any:
            return message

    sup = Supervisor([ChildSpec("a", FailsSecondStart)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.stop_child("a")
        with pytest.raises(OSError, match=r"^port taken$"):
            await sup.restart_child("a")
        assert sup.which_children()[0].state == "stopped"
        await sup.stop()


async def test_lookup_walks_nested_supervisors_and_follows_restarted_subtrees() -> None:
    journal: Journal = []

    def inner() -> Supervisor:
        return Supervisor([ChildSpec("w", Worker, journal)], name="inner", max_restarts=0)

    root = Supervisor([ChildSpec("pool", inner)], name="root")
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        old = root.lookup("pool/w")
        with pytest.raises(ActorCrashed):
            await old.ask("crash")  # the inner supervisor gives up; root restarts it
        await settle()
        new = root.lookup("pool/w")
        assert new is not old
        assert await new.ask("x") == (None, "x")
        for path, message in [
            ("pool/nope", "Supervisor 'inner' has no child named 'nope' (children: 'w')."),
            (
                "pool/w/x",
                "Child 'w' of supervisor 'inner' is an actor, not a supervisor; use sup.ref('w').",
            ),
            (
                "pool",
                "Child 'pool' of supervisor 'root' is a supervisor, not an actor; use "
                "sup.supervisor('pool').ref(...) to reach its children.",
            ),
        ]:
            with pytest.raises(LookupError) as info:
                root.lookup(path)
            assert str(info.value) == f"lookup({path!r}) in supervisor 'root': {message}"
        with pytest.raises(
            ValueError,
            match=r"^Supervisor 'root': lookup path must be child names joined by '/' \(e\.g\. "
            r"'pool/worker-3'\), got 'pool//w'\.$",
        ):
            root.lookup("pool//w")
        await root.stop()


# -- shutdown grace ----------------------------------------------------------------


async def test_stop_gives_each_child_its_grace_in_reverse_start_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    times: dict[str, float] = {}

    class Clocked(list[str]):
        def append(self, item: str) -> None:
            times[item] = trio.current_time()
            super().append(item)

    journal = Clocked()
    sup = Supervisor(
        [
            ChildSpec("a", Worker, journal, None, 3.0, shutdown_s=5.0),  # finishes in 3 s
            ChildSpec("b", Worker, journal, None, 60.0, shutdown_s=2.0),  # cut at 2 s
            ChildSpec("c", Worker, journal, None, 60.0, shutdown_s=0),  # killed at once
        ]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        begin = trio.current_time()
        await sup.stop()
    assert [line for line in journal if line.startswith("stop")] == [
        "stopping c",
        "stopping b",
        "stopping a",
        "stopped a",
    ]
    assert times["stopping c"] - begin == 0.0
    assert times["stopping b"] - begin == 0.0  # c was killed at once
    assert times["stopping a"] - begin == 2.0  # b had its 2 s
    assert times["stopped a"] - begin == 5.0  # a finished within its 5 s


def test_shutdown_s_is_checked() -> None:
    for bad in (-1, math.nan, "5", True):
        with pytest.raises(ValueError) as info:
            ChildSpec("a", Worker, shutdown_s=bad)  # type: ignore[arg-type]
        assert str(info.value) == (
            "ChildSpec 'a': shutdown_s must be a number of seconds >= 0 (0 kills at once, "
            f"math.inf waits for on_stop as long as it takes), got {bad!r}."
        )
    assert ChildSpec("a", Worker, shutdown_s=math.inf).shutdown_s == math.inf
    assert ChildSpec("a", Worker).shutdown_s == 5.0


# -- exit reasons ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "message", "restarted", "reason"),
    [
        (Restart.TRANSIENT, "exit", False, "normal"),
        (Restart.TRANSIENT, "shutdown", False, "shutdown"),
        (Restart.TRANSIENT, "bye", True, None),  # any other reason is a crash
        (Restart.TRANSIENT, "crash", True, None),
        (Restart.PERMANENT, "exit", True, None),
        (Restart.PERMANENT, "shutdown", True, None),
        (Restart.TEMPORARY, "crash", False, "crashed"),
    ],
)
async def test_exit_reasons_decide_restarts(
    restart: Restart, message: str, restarted: bool, reason: str | None
) -> None:
    journal: Journal = []
    sup = Supervisor([ChildSpec("a", Worker, journal, restart=restart)], name="root")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref = sup.ref("a")
        ref.tell_nowait(message)
        ref.tell_nowait("queued")
        await settle()
        restarts = [e for e in sup.events() if isinstance(e, ChildRestarted)]
        stopped = [e.reason for e in sup.events() if isinstance(e, ChildStopped)]
        assert len(restarts) == (1 if restarted else 0)  # one crash costs one restart
        assert stopped == ([] if reason is None else [reason])
        if message in ("exit", "shutdown"):
            # A chosen exit: its message was handled; the queue died with the actor.
            assert [(d.message, d.reason) for d in sup.dead_letters()] == [("queued", "stopped")]
        await sup.stop()


async def test_an_ask_that_asks_for_a_normal_exit_gets_actor_stopped() -> None:
    sup = Supervisor([ChildSpec("a", Worker, [], restart=Restart.TEMPORARY)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(
            ActorStopped, match=r"^Actor 'a' stopped \(normal\) before answering\.$"
        ):
            await sup.ref("a").ask("exit")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.which_children()[0].state == "stopped"
        await sup.stop()


def test_actor_exit_needs_a_reason() -> None:
    with pytest.raises(
        ValueError,
        match=r"^ActorExit: reason must be a non-empty string \('normal', 'shutdown', or any "
        r"other text for a crash\), got ''\.$",
    ):
        ActorExit("")
    assert not ActorExit().is_crash
    assert not ActorExit("shutdown").is_crash
    assert ActorExit("disk full").is_crash
