"""A run's actors: frames through mailboxes at every depth, the registry, the run supervisor."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from flujo_actors import ExecutionFrame, Flujo, FlujoInternalError, Pipeline, Step
from flujo_actors.governor import Charge
from flujo_actors.testing.agents import UsageOutput

if TYPE_CHECKING:
    from flujo_actors.introspection import ActorSnapshot
    from tests.gates import gate as _gate  # mypy names test modules by path
else:
    from gates import gate as _gate  # pytest puts tests/ on sys.path


async def test_a_leaf_actor_deep_in_the_tree_holds_the_frame_its_mailbox_received(
    autojump_clock: trio.abc.Clock,
) -> None:
    # nested pipeline > loop > parallel branch > leaf agent step
    release, wait = _gate()
    fan = Step.parallel(
        "fan",
        {"a": Step.from_callable(wait, name="leaf"), "b": Step.from_callable(wait, name="b1")},
    )
    loop = Step.loop_until("loop", fan, lambda out, ctx: True, max_loops=1)
    outer = Pipeline(steps=[loop]).as_step("outer")
    runner = Flujo(outer)
    snaps: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 7)
        await trio.testing.wait_all_tasks_blocked()
        snaps.append(runner.snapshot())
        release.set()
    (snap,) = snaps[0]
    steps = {node.path: node for node in snap.walk() if node.kind == "step"}
    assert sorted(steps) == [
        ("outer",),
        ("outer", "loop"),
        ("outer", "loop", "fan"),
        ("outer", "loop", "fan", "a", "leaf"),
        ("outer", "loop", "fan", "b", "b1"),
    ]
    # Nested by path: each level is the child of the one above it.
    outer_node: ActorSnapshot = steps[("outer",)]
    assert [c.path for c in outer_node.children] == [("outer", "loop")]
    (fan_node,) = outer_node.children[0].children
    assert sorted(c.name for c in fan_node.children) == ["b1", "leaf"]
    leaf = steps[("outer", "loop", "fan", "a", "leaf")]
    frame = leaf.current
    assert isinstance(frame, ExecutionFrame)
    assert (frame.step.name, frame.data, frame.path) == ("leaf", 7, leaf.path)
    # The frame came through the leaf's one-shot mailbox: taken (depth 0), in hand.
    s = leaf.statistics
    assert (s.state, s.mailbox_depth, s.mailbox_capacity, s.handled) == ("running", 0, 1, 0)
    # The loop body (the parallel step) is a reused actor with a bounded mailbox.
    body = steps[("outer", "loop", "fan")].statistics
    assert (body.mailbox_capacity, body.handled) == (16, 0)
    assert isinstance(steps[("outer", "loop", "fan")].current, ExecutionFrame)
    assert runner.snapshot() == ()


async def test_the_governor_shows_its_mailbox_depth_while_charges_are_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    release, wait = _gate()

    async def paid(data: Any) -> UsageOutput:
        return UsageOutput(data, cost_usd=0.25, token_counts=1)

    fan = Step.parallel("fan", {f"p{i}": Step.from_callable(paid, name=f"p{i}") for i in range(3)})

    async def settle(data: Any) -> Any:
        await trio.sleep(1)  # the governor started by the first charge applies it, parks
        return 0  # not the UsageOutput: it would be charged again

    first = Step.from_callable(paid, name="first")
    runner = Flujo(first >> Step.from_callable(settle) >> fan >> Step.from_callable(wait))
    seen: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 0)
        await trio.sleep(2)  # past settle (the mock clock jumps)
        await trio.testing.wait_all_tasks_blocked()
        (snap,) = runner.snapshot()
        seen.append(snap)
        release.set()
    (governor,) = [a for a in seen[0].walk() if a.kind == "governor"]
    # No limit: the branches' three charges were told, not asked; below the batch
    # size they wait in the parked governor's mailbox, counted in the totals.
    assert (governor.statistics.mailbox_depth, governor.statistics.handled) == (3, 1)
    assert (seen[0].total_cost_usd, seen[0].total_tokens) == (Decimal("1.00"), 4)


async def test_a_run_without_limits_opens_its_nursery_when_usage_is_first_reported() -> None:
    # Nothing can cancel such a run from inside: its steps run on its task with no
    # nursery, until a usage report starts the governor after the step that made it.
    paid_gate, release_wait = trio.Event(), trio.Event()

    async def paid(data: Any) -> UsageOutput:
        await paid_gate.wait()
        return UsageOutput(data, cost_usd=0.5, token_counts=3)

    async def wait(data: Any) -> Any:
        await release_wait.wait()
        return 7

    runner = Flujo(Step.from_callable(paid, name="paid") >> Step.from_callable(wait, name="wait"))
    results: list[Any] = []

    async def run() -> None:
        results.append(await runner.run_async(0))

    def governor_state() -> tuple[str, int, int]:
        (snap,) = runner.snapshot()
        (gov,) = [a for a in snap.walk() if a.kind == "governor"]
        return gov.statistics.state, gov.statistics.handled, gov.statistics.mailbox_depth

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        (task,) = nursery.child_tasks
        assert task.child_nurseries == []
        assert governor_state() == ("new", 0, 0)
        paid_gate.set()
        await trio.testing.wait_all_tasks_blocked()
        (run_nursery,) = task.child_nurseries
        assert [t.name.rsplit(".", 1)[-1] for t in run_nursery.child_tasks] == ["_supervise"]
        assert governor_state() == ("running", 1, 0)
        (snap,) = runner.snapshot()
        assert (snap.total_cost_usd, snap.total_tokens) == (Decimal("0.5"), 3)
        release_wait.set()
    (result,) = results
    assert (result.output, result.total_cost_usd, result.total_tokens) == (7, Decimal("0.5"), 3)


async def test_the_last_steps_usage_is_applied_in_a_run_without_a_nursery() -> None:
    async def paid(data: Any) -> UsageOutput:
        return UsageOutput(data, cost_usd=0.25, token_counts=2)

    runner = Flujo(Step.from_callable(lambda d: d, name="free") >> Step.from_callable(paid))
    result = await runner.run_async(0)
    assert (result.total_cost_usd, result.total_tokens) == (Decimal("0.25"), 2)
    assert runner.snapshot() == ()


async def test_a_run_of_sync_steps_is_a_schedule_point() -> None:
    # With no nursery of its own, the run still lets the other tasks run.
    runner = Flujo(Step.from_callable(lambda d: d + 1, name="inc"))
    with trio.testing.assert_checkpoints():
        result = await runner.run_async(0)
    assert result.output == 1


async def test_a_runs_governor_is_built_at_its_first_use() -> None:
    # A run of plain steps that reports no usage never builds one; a snapshot does.
    release, wait = _gate()
    runner = Flujo(Step.from_callable(wait, name="wait"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 0)
        await trio.testing.wait_all_tasks_blocked()
        (live,) = runner._live.values()
        assert live.run.governor is None
        (snap,) = runner.snapshot()
        (gov,) = [a for a in snap.actors if a.kind == "governor"]
        assert (gov.statistics.state, gov.statistics.handled) == ("new", 0)
        assert live.run.governor is not None
        release.set()
    assert runner.snapshot() == ()


class _Bogus(Charge):
    """A governor message of a type the governor does not know: applying it is a bug."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "_Bogus()"


async def test_a_crashing_runtime_actor_fails_the_run_with_an_internal_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    release, wait = _gate()

    async def paid(data: Any) -> UsageOutput:
        return UsageOutput(data, cost_usd=0.5, token_counts=1)

    runner = Flujo(Step.from_callable(paid, name="paid") >> Step.from_callable(wait, name="wait"))
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await runner.run_async(0, run_id="r1")
        except FlujoInternalError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        (live,) = runner._live.values()
        governor = live.run.governor
        assert governor is not None and governor.state == "running"
        result = Charge.__new__(_Bogus)
        result.waiter = None
        result.error = None
        governor.tell_nowait(result)  # a told message it cannot apply: a bug, a crash
        governor.close()  # wakes it now (the runner would, at the end of the run)
    # The run did not hang on its gated step: the crash stopped every actor of it.
    assert not release.is_set()
    (err,) = errors
    assert str(err) == (
        "Runtime actor 'governor' of run 'r1' crashed (TypeError: Governor got an unknown "
        "message _Bogus().); the run was stopped. This is a bug in flujo_actors, not in "
        "the pipeline: please report it with the traceback."
    )
    assert isinstance(err.__cause__, TypeError)
    assert runner.snapshot() == ()
