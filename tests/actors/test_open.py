"""``open_actor`` / ``open_supervisor`` / ``open_dynamic_supervisor``: running inside ``async with``."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from flujo_actors import (
    Actor,
    ActorCrashed,
    ActorRef,
    ChildSpec,
    Monitor,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    open_actor,
    open_dynamic_supervisor,
    open_supervisor,
)


class Logged(Actor):
    """Journals ``start``/``stop``; ``"crash"`` raises, anything else is echoed with its name."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def on_start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.journal.append(f"stop {self.name}")

    async def handle(self, message: object) -> object:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        return (self.name, message)


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def _specs(
    journal: list[str], *names: str, restart: Restart = Restart.PERMANENT
) -> list[ChildSpec]:
    return [ChildSpec(n, Logged, journal, restart=restart) for n in names]


# -- open_supervisor ----------------------------------------------------------------------


async def test_the_block_gets_a_running_supervisor_and_leaving_stops_it_in_reverse() -> None:
    journal: list[str] = []
    async with open_supervisor(_specs(journal, "a", "b"), name="svc") as sup:
        assert journal == ["start a", "start b"]  # every on_start ran before the block
        assert await sup.ref("b").ask("hi") == ("b", "hi")
        assert sup.name == "svc"
    assert journal == ["start a", "start b", "stop b", "stop a"]
    assert [c.state for c in sup.which_children()] == ["stopped", "stopped"]


async def test_an_error_in_the_block_is_raised_as_itself_after_the_children_stopped() -> None:
    journal: list[str] = []
    with pytest.raises(KeyError, match=r"^'boom'$"):
        async with open_supervisor(_specs(journal, "a")):
            raise KeyError("boom")
    assert journal == ["start a", "stop a"]


async def test_giving_up_cancels_the_block_and_raises_restart_intensity_exceeded() -> None:
    journal: list[str] = []
    reached_the_end = False

    async def crash_and_wait() -> None:
        nonlocal reached_the_end
        async with open_supervisor(_specs(journal, "a"), max_restarts=0) as sup:
            sup.ref("a").tell_nowait("crash")
            await trio.sleep_forever()
            reached_the_end = True  # pragma: no cover - the block is cancelled

    with pytest.raises(RestartIntensityExceeded) as info:
        await crash_and_wait()
    assert not reached_the_end
    assert str(info.value).startswith("Supervisor 'supervisor' gave up")
    assert journal[-1] == "stop a"


async def test_cancelling_around_the_block_stops_everything_quietly() -> None:
    journal: list[str] = []
    with trio.move_on_after(1) as scope:
        async with open_supervisor(_specs(journal, "a", "b")):
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert sorted(journal) == ["start a", "start b", "stop a", "stop b"]


async def test_bad_options_raise_at_the_call_before_anything_starts() -> None:
    with pytest.raises(
        ValueError,
        match=_exact("Supervisor 'svc': strategy must be a Strategy member, got 'one'."),
    ):
        open_supervisor([], strategy="one", name="svc")  # type: ignore[arg-type]


async def test_strategies_and_options_are_the_supervisors() -> None:
    journal: list[str] = []
    async with open_supervisor(
        _specs(journal, "a", "b"), strategy=Strategy.ONE_FOR_ALL, max_restarts=5
    ) as sup:
        with pytest.raises(ActorCrashed):
            await sup.ref("a").ask("crash")
        await trio.testing.wait_all_tasks_blocked()  # the restart has happened
        assert [c.restarts for c in sup.statistics().children] == [1, 1]
        assert await sup.ref("b").ask("again") == ("b", "again")
    assert journal.count("start b") == 2  # ONE_FOR_ALL restarted its sibling


# -- open_dynamic_supervisor ----------------------------------------------------------------


async def test_a_dynamic_supervisor_starts_children_on_demand_inside_the_block() -> None:
    journal: list[str] = []
    spec = ChildSpec("conn", Logged, journal, restart=Restart.TEMPORARY)
    async with open_dynamic_supervisor(spec, max_children=2) as dyn:
        first = await dyn.start_child()
        second = await dyn.start_child()
        assert await first.ask(1) == ("conn-1", 1)
        assert await second.ask(2) == ("conn-2", 2)
    assert journal == ["start conn-1", "start conn-2", "stop conn-2", "stop conn-1"]


async def test_a_dynamic_supervisor_refuses_a_strategy_at_the_call() -> None:
    spec = ChildSpec("conn", Logged, [])
    with pytest.raises(
        ValueError,
        match=_exact(
            "DynamicSupervisor 'dynamic supervisor': strategy= is not an option; a dynamic "
            "supervisor restarts each child on its own (ONE_FOR_ONE) and starts its children "
            "with start_child(*args)."
        ),
    ):
        open_dynamic_supervisor(spec, strategy=Strategy.ONE_FOR_ALL)  # type: ignore[call-arg]


# -- open_actor -------------------------------------------------------------------------------


async def test_an_actor_runs_for_the_block_and_stops_after_it() -> None:
    journal: list[str] = []
    async with open_actor(Logged(journal), name="echo", mailbox_size=4) as ref:
        assert journal == ["start echo"]
        assert await ref.ask("x") == ("echo", "x")
        assert ref.statistics().mailbox_capacity == 4
    assert journal == ["start echo", "stop echo"]
    assert ref.statistics().state == "stopped"


async def test_an_unsupervised_crash_cancels_the_block_and_raises_the_handlers_error() -> None:
    journal: list[str] = []

    async def crash_and_wait() -> None:
        async with open_actor(Logged(journal), name="echo") as ref:
            ref.tell_nowait("crash")
            await trio.sleep_forever()

    with pytest.raises(RuntimeError, match=r"^echo crashed$"):
        await crash_and_wait()
    assert journal == ["start echo", "stop echo"]


async def test_an_error_in_the_actor_block_is_raised_as_itself() -> None:
    journal: list[str] = []
    with pytest.raises(LookupError, match=r"^nope$"):
        async with open_actor(Logged(journal), name="echo"):
            raise LookupError("nope")
    assert journal == ["start echo", "stop echo"]


# -- no public constructor for what a factory hands out -----------------------------------


async def test_refs_and_monitors_come_from_factories_only() -> None:
    journal: list[str] = []
    async with open_actor(Logged(journal), name="echo") as ref:
        with pytest.raises(
            TypeError,
            match=_exact(
                "ActorRef has no public constructor; get one from start_actor(...), "
                "open_actor(...) or a supervisor's ref(name)."
            ),
        ):
            ActorRef(ref.cell)
        with pytest.raises(
            TypeError,
            match=_exact("Monitor has no public constructor; get one from ref.monitor()."),
        ):
            Monitor(ref.cell)
        async with ref.monitor() as down:  # the factory still works
            assert isinstance(down, Monitor)
            assert isinstance(ref, ActorRef)
            assert down.down is None
