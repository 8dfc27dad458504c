"""Monitors (``ref.monitor()`` -> ActorDown) and crashing an actor on purpose."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from flujo_actors.actors import (
    Actor,
    ActorDown,
    ChildCrashed,
    ChildSpec,
    Restart,
    Supervisor,
    start_actor,
)
from flujo_actors.errors import ActorCrashed, RestartIntensityExceeded


class Echo(Actor):
    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("boom")
        if message == "shutdown":
            self.exit("shutdown")
        if message == "wait":
            await trio.sleep_forever()
        return message


async def test_an_unsupervised_actor_reports_normal_stop_and_chosen_exits() -> None:
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Echo(), name="a")
        async with ref.monitor() as down:
            assert down.down is None
            await ref.stop()
            assert await down.wait() == ActorDown("a", "normal", None)
        other = await start_actor(nursery, Echo(), name="b")
        async with other.monitor() as down:
            await other.tell("shutdown")
            assert await down.wait() == ActorDown("b", "shutdown", None)


async def test_an_unsupervised_crash_and_an_outside_cancel_are_reported() -> None:
    seen: list[ActorDown] = []
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match=r"^boom$")):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, Echo(), name="a")

            async def watch() -> None:
                async with ref.monitor() as down:
                    seen.append(await down.wait())

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            await ref.tell("crash")
    assert seen == [ActorDown("a", "crashed", "RuntimeError: boom")]
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, Echo(), name="c")
        nursery.cancel_scope.cancel()
    async with ref.monitor() as down:  # already down: reported at once
        assert await down.wait() == ActorDown("c", "cancelled", None)


async def test_a_restart_is_not_a_down_but_stop_child_and_giving_up_are() -> None:
    sup = Supervisor(
        [
            ChildSpec("p", Echo),
            ChildSpec("t", Echo, restart=Restart.TEMPORARY),
            ChildSpec("q", Echo),
        ],
        name="root",
        max_restarts=1,
    )
    downs: list[ActorDown] = []
    with pytest.RaisesGroup(RestartIntensityExceeded):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)

            async def watch(name: str) -> None:
                async with sup.ref(name).monitor() as down:
                    downs.append(await down.wait())

            for name in ("p", "t", "q"):
                nursery.start_soon(watch, name)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorCrashed):
                await sup.ref("p").ask("crash")  # restarted: no down
            await trio.testing.wait_all_tasks_blocked()
            assert downs == []
            with pytest.raises(ActorCrashed):
                await sup.ref("t").ask("crash")  # temporary: down for good
            await trio.testing.wait_all_tasks_blocked()
            assert downs == [ActorDown("t", "crashed", "RuntimeError: boom")]
            with pytest.raises(ActorCrashed):
                await sup.ref("p").ask("crash")  # second restart: the supervisor gives up
    # (watchers wake in trio's scheduling order, not in stop order: compare as a set)
    assert set(downs[1:]) == {ActorDown("q", "shutdown"), ActorDown("p", "shutdown")}


async def test_stop_child_reports_shutdown_and_restart_child_rearms_the_monitor() -> None:
    sup = Supervisor([ChildSpec("a", Echo)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref = sup.ref("a")
        async with ref.monitor() as down:
            await sup.stop_child("a")
            assert await down.wait() == ActorDown("a", "shutdown")
        await sup.restart_child("a")
        async with ref.monitor() as down:
            await trio.testing.wait_all_tasks_blocked()
            assert down.down is None
            await sup.stop()
            assert await down.wait() == ActorDown("a", "shutdown")


async def test_crash_on_purpose_restarts_a_supervised_actor_and_fails_its_asker() -> None:
    sup = Supervisor([ChildSpec("a", Echo)], name="root")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref = sup.ref("a")
        failed: list[BaseException] = []

        async def ask() -> None:
            try:
                await ref.ask("wait")
            except ActorCrashed as exc:
                failed.append(exc)

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        ref.cell.crash(RuntimeError("on purpose"))
        await trio.testing.wait_all_tasks_blocked()
        assert [str(e) for e in failed] == [
            "Actor 'a' crashed handling the message: RuntimeError: on purpose"
        ]
        crashes = [e.error for e in sup.events() if isinstance(e, ChildCrashed)]
        assert crashes == ["RuntimeError: on purpose"]
        assert ref.statistics().restarts == 1
        assert await ref.ask("hi") == "hi"
        await sup.stop()
        with pytest.raises(
            RuntimeError,
            match=r"^Actor 'a' is stopped, not running; only a running actor can be crashed "
            r"\(start it first, or wait for its restart\)\.$",
        ):
            ref.cell.crash(RuntimeError("late"))
