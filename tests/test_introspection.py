"""Live introspection: actor statistics and snapshots of running runs."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from flujo_actors import Actor, ExecutionFrame, Flujo, Step, start_actor
from flujo_actors.actors import ActorStatistics, ChildSpec, Supervisor
from flujo_actors.introspection import ActorSnapshot, RuntimeSnapshot, actor_tree
from flujo_actors.testing.agents import UsageOutput

if TYPE_CHECKING:
    from tests.gates import gate as _gate  # mypy names test modules by path
else:
    from gates import gate as _gate  # pytest puts tests/ on sys.path


async def test_no_snapshot_without_a_run() -> None:
    runner = Flujo(Step.from_callable(lambda d: d, name="id"))
    assert runner.snapshot() == ()
    await runner.run_async(1)
    assert runner.snapshot() == ()


async def test_a_snapshot_shows_the_governor_and_the_running_branches() -> None:
    release, wait = _gate()

    async def paid(data: Any) -> UsageOutput:
        return UsageOutput(data, cost_usd=0.5, token_counts=3)

    fan = Step.parallel(
        "fan",
        {name: Step.from_callable(wait, name=f"{name}1") for name in ("a", "b", "c")},
    )
    runner = Flujo(Step.from_callable(paid, name="paid") >> fan)
    snaps: list[tuple[RuntimeSnapshot, ...]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 0)
        await trio.testing.wait_all_tasks_blocked()
        snaps.append(runner.snapshot())
        release.set()
    assert runner.snapshot() == ()
    (snap,) = snaps[0]
    assert snap.pipeline == "pipeline"
    assert (snap.total_cost_usd, snap.total_tokens, snap.dead_letters) == (Decimal("0.5"), 3, 0)
    kinds = [(a.kind, a.name) for a in snap.actors]
    assert ("governor", "governor") in kinds
    governor = next(a for a in snap.actors if a.kind == "governor")
    assert governor.statistics.state == "running"
    # The charge of "paid" is applied, or queued in the governor's mailbox.
    assert governor.statistics.handled + governor.statistics.mailbox_depth == 1
    steps = [a for a in snap.actors if a.kind == "step"]
    assert [s.path for s in steps] == [("fan",)]
    fan_node = steps[0]
    assert fan_node.statistics.state == "running"
    # Each branch's step actor has a one-shot mailbox: its frame was taken (depth 0)
    # and is being handled (not counted yet).
    assert sorted(
        (
            c.path,
            c.statistics.state,
            c.statistics.mailbox_depth,
            c.statistics.mailbox_capacity,
            c.statistics.handled,
        )
        for c in fan_node.children
    ) == [
        (("fan", "a", "a1"), "running", 0, 1, 0),
        (("fan", "b", "b1"), "running", 0, 1, 0),
        (("fan", "c", "c1"), "running", 0, 1, 0),
    ]
    for child in fan_node.children:
        assert isinstance(child.current, ExecutionFrame)
        assert child.current.path == child.path
        assert child.current.step.name == child.name
    assert [a.name for a in snap.walk()].count("b1") == 1


async def test_loop_body_actors_keep_a_mailbox_and_count_messages() -> None:
    gates: list[trio.Event] = [trio.Event() for _ in range(3)]
    calls = [0]

    async def body(data: int) -> int:
        calls[0] += 1
        await gates[calls[0] - 1].wait()
        return data + 1

    loop = Step.loop_until(
        "loop", Step.from_callable(body, name="body"), lambda out, ctx: out >= 3, max_loops=3
    )
    runner = Flujo(loop)
    seen: list[ActorSnapshot] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 0)
        for gate in gates:
            await trio.testing.wait_all_tasks_blocked()
            (snap,) = runner.snapshot()
            loop_node = next(a for a in snap.actors if a.kind == "step")
            (body_node,) = loop_node.children
            seen.append(body_node)
            gate.set()
    assert [n.path for n in seen] == [("loop", "body")] * 3
    assert [n.statistics.handled for n in seen] == [0, 1, 2]
    assert {(n.statistics.state, n.statistics.mailbox_capacity) for n in seen} == {("running", 16)}


async def test_actor_tree_reports_mailboxes_restarts_and_errors() -> None:
    class Slow(Actor):
        def __init__(self) -> None:
            self.release = trio.Event()

        async def handle(self, message: Any) -> Any:
            await self.release.wait()
            return message

    crashes = [0]

    class Crashy(Actor):
        async def handle(self, message: Any) -> Any:
            if not crashes[0]:
                crashes[0] += 1
                raise ValueError(f"bad message {message!r}")
            return message

    slow = Slow()
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, slow, name="slow", mailbox_size=8)
        for i in range(4):
            ref.tell_nowait(i)
        sup = Supervisor([ChildSpec("crashy", Crashy)], max_restarts=5, name="sup")
        sup_ref = await nursery.start(sup.run)
        await sup_ref.ref("crashy").tell("x")
        await trio.testing.wait_all_tasks_blocked()
        tree = actor_tree(nursery)
        by_name = {a.name: a for root in tree for a in root.walk()}
        assert by_name["slow"].statistics == ActorStatistics(
            name="slow",
            state="running",
            mailbox_depth=3,
            mailbox_capacity=8,
            handled=0,
            restarts=0,
            last_error=None,
        )
        crashy = by_name["crashy"].statistics
        assert (crashy.restarts, crashy.last_error) == (1, "ValueError: bad message 'x'")
        assert by_name["crashy"].kind == "actor"
        slow.release.set()
        await sup.stop()
        nursery.cancel_scope.cancel()


def test_statistics_and_snapshots_are_frozen() -> None:
    stats = ActorStatistics(
        name="a",
        state="running",
        mailbox_depth=0,
        mailbox_capacity=1,
        handled=0,
        restarts=0,
        last_error=None,
    )
    node = ActorSnapshot(name="a", kind="actor", path=(), statistics=stats)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.handled = 1  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        node.name = "b"  # type: ignore[misc]


async def test_a_snapshot_formats_as_text(autojump_clock: trio.abc.Clock) -> None:
    # On the mock clock no time passes while the tasks settle, so t+0.000s is
    # exact (on the real clock a busy machine showed t+0.012s).
    release, wait = _gate()
    runner = Flujo(Step.from_callable(wait, name="wait"))
    text: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            runner.run_async,
            0,
        )
        await trio.testing.wait_all_tasks_blocked()
        (snap,) = runner.snapshot()
        text.append(snap.format())
        release.set()
    lines = text[0].splitlines()
    assert lines[0] == f"run {snap.run_id} (pipeline) t+0.000s cost=$0 tokens=0 dead_letters=0"
    assert len(lines) == 3
    assert "  step wait [running] mailbox=0/1 handled=0 restarts=0" in lines
    # No usage reported yet: the governor has not been started (it starts at its
    # first message), but it is in the run's registry with its empty mailbox.
    assert "  governor governor [new] mailbox=0/inf handled=0 restarts=0" in lines
