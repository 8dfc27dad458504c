"""Checkpoints of completed work at every depth: a resumed run re-runs only what had not completed.

A crash is simulated in-process by an agent raising a BaseException (it
escapes the run like a dying process: nothing after it is saved); the
subprocess SIGKILL property is in test_durable_kill.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import Flujo, Pipeline, PipelineContext, Step
from flujo_actors.backends.sqlite import SQLiteBackend
from flujo_actors.backends.state import InMemoryStateBackend, PositionRecord
from flujo_actors.persistence import ResumePoint
from flujo_actors.run.checkpoint import position_key
from flujo_actors.testing.backends import check_state_backend

if TYPE_CHECKING:
    from pathlib import Path


class Crash(BaseException):
    """Stands in for the process dying (escapes the run; nothing after it is saved)."""


@attrs.define
class Ctx(PipelineContext):
    trail: list[str] = attrs.Factory(list)
    total: int = 0


class World:
    """Side effects of the agents, and where the next crash happens."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.crash_at: tuple[str, int] | None = None  # (step name, its n-th call)
        self.calls: Counter[str] = Counter()
        self.committed: Counter[str] = Counter()
        self.calls_at_crash: Counter[str] = Counter()

    def resumed_calls(self) -> Counter[str]:
        return self.calls - self.calls_at_crash

    def step(self, name: str, *, cost: float = 0.0, sleep: float = 0.0) -> Step:
        async def agent(x: int, *, context: Ctx) -> Any:
            if sleep:
                await trio.sleep(sleep)
            self.calls[name] += 1
            if self.crash_at == (name, self.calls[name]):
                raise Crash(name)
            self.log.append(name)
            context.trail.append(name)
            context.total += x
            return _Out(x + 1, cost) if cost else x + 1

        return Step.from_callable(agent, name=name, max_retries=0)


@attrs.define
class _Out:
    value: int
    cost_usd: float

    def __int__(self) -> int:
        return self.value


def _value(x: Any) -> int:
    return x.value if isinstance(x, _Out) else int(x)


async def crash_then_resume(
    build: Any, world: World, crash_at: tuple[str, int], backend: Any
) -> Any:
    world.crash_at = crash_at
    with pytest.raises(Crash):
        await Flujo(build(), context_model=Ctx, state_backend=backend).run_async(0, run_id="r")
    world.crash_at = None
    # What the store says completed: those steps must not run again.
    snap = await backend.load_state("r")
    positions = await backend.load_positions("r")
    world.committed = Counter(
        [r.name for r in ResumePoint(snap, positions).history]
        + [json.loads(k)[-1] for k in positions]
    )
    world.calls_at_crash = Counter(world.calls)
    return await Flujo(build(), context_model=Ctx, state_backend=backend).resume_async("r")


def loop_pipeline(world: World) -> Pipeline:
    body = world.step("b1") >> world.step("b2")
    loop = Step.loop_until("L", body, lambda out, ctx: out >= 8, max_loops=10)
    return world.step("s0") >> loop >> world.step("s_end")


def shape(result: Any) -> Any:
    def tree(r: Any) -> Any:
        return (r.name, r.success, repr(r.output), [tree(c) for c in r.step_history])

    return [tree(r) for r in result.step_history]


async def test_a_loop_resumes_at_the_iteration_in_progress() -> None:
    world = World()
    # b2 crashes on its 3rd call: iterations 1 and 2 and b1 of iteration 3 completed.
    resumed = await crash_then_resume(
        lambda: loop_pipeline(world), world, ("b2", 3), InMemoryStateBackend()
    )
    assert world.log == ["s0", *["b1", "b2"] * 2, "b1", "b2", *["b1", "b2"], "s_end"]
    # Every step that completed before the crash ran once; the crashed one again.
    assert world.calls == Counter({"s0": 1, "b1": 4, "b2": 5, "s_end": 1})

    clean_world = World()
    clean = await Flujo(loop_pipeline(clean_world), context_model=Ctx).run_async(0)
    assert resumed.success and resumed.output == clean.output == 10
    assert resumed.final_pipeline_context.trail == clean.final_pipeline_context.trail
    assert resumed.final_pipeline_context.total == clean.final_pipeline_context.total
    assert shape(resumed) == shape(clean)
    assert resumed.step_history[1].metadata["iterations"] == 4


def fan_pipeline(world: World) -> Pipeline:
    fan = Step.parallel(
        "P",
        {
            "x": world.step("x1") >> world.step("x2"),
            "y": world.step("y1", sleep=1.0) >> world.step("y2", sleep=1.0),
        },
    )
    return world.step("s0") >> fan


async def test_completed_branches_are_merged_not_rerun(autojump_clock: trio.abc.Clock) -> None:
    world = World()
    resumed = await crash_then_resume(
        lambda: fan_pipeline(world), world, ("y2", 1), InMemoryStateBackend()
    )
    # Branch x and y1 completed before y2 crashed: only y2 runs again.
    assert world.calls == Counter({"s0": 1, "x1": 1, "x2": 1, "y1": 1, "y2": 2})
    clean = await Flujo(fan_pipeline(World()), context_model=Ctx).run_async(0)
    assert resumed.output == clean.output == {"x": 3, "y": 3}
    # x's context changes were merged as if it had just finished (y's win: declared later).
    assert resumed.final_pipeline_context.trail == clean.final_pipeline_context.trail
    assert resumed.final_pipeline_context.total == clean.final_pipeline_context.total
    assert shape(resumed) == shape(clean)


def deep_pipeline(world: World) -> Pipeline:
    """A loop inside a parallel branch inside a nested pipeline, and a conditional."""
    inner_loop = Step.loop_until(
        "inner", world.step("i1") >> world.step("i2"), lambda out, ctx: out >= 5, max_loops=5
    )
    fan = Step.parallel("fan", {"a": inner_loop, "b": world.step("b1")})
    cond = Step.branch_on(
        "cond",
        lambda data, ctx: "big" if data > 5 else "small",
        {"big": world.step("c_big") >> world.step("c_after"), "small": world.step("c_small")},
    )
    squash = Step.from_callable(lambda d: d["a"] + d["b"], name="squash")
    nested = (world.step("n0") >> fan >> squash >> cond).as_step("nested")
    return world.step("s0") >> nested >> world.step("last")


@pytest.mark.parametrize(
    "crash_at",
    [
        ("i1", 1),
        ("i2", 2),
        ("i1", 2),
        ("b1", 1),
        ("n0", 1),
        ("c_big", 1),
        ("c_after", 1),
        ("last", 1),
    ],
)
async def test_at_depth_only_unfinished_work_runs_again(crash_at: tuple[str, int]) -> None:
    world = World()
    resumed = await crash_then_resume(
        lambda: deep_pipeline(world), world, crash_at, InMemoryStateBackend()
    )
    clean_world = World()
    clean = await Flujo(deep_pipeline(clean_world), context_model=Ctx).run_async(0)
    # The resume runs exactly what the store did not record as completed (the step
    # that crashed, and siblings finished but not yet committed when it did).
    committed_agents = Counter({k: v for k, v in world.committed.items() if k in clean_world.calls})
    assert world.resumed_calls() + committed_agents == clean_world.calls
    assert world.calls[crash_at[0]] == clean_world.calls[crash_at[0]] + 1
    assert committed_agents[crash_at[0]] == crash_at[1] - 1
    assert resumed.success and resumed.output == clean.output
    assert resumed.final_pipeline_context.total == clean.final_pipeline_context.total
    assert shape(resumed) == shape(clean)


async def test_replayed_usage_counts_in_the_resumed_totals() -> None:
    world = World()

    def build() -> Pipeline:
        body = world.step("paid", cost=0.25) >> Step.from_callable(_value, name="unwrap")
        return Pipeline.from_step(
            Step.loop_until("L", body, lambda out, ctx: out >= 3, max_loops=5)
        )

    resumed = await crash_then_resume(build, world, ("paid", 3), InMemoryStateBackend())
    assert world.calls["paid"] == 4  # two replayed, the crashed one and the last one ran
    assert resumed.total_cost_usd == Decimal("0.75")
    assert resumed.step_history[0].cost_usd == Decimal("0.75")


async def test_positions_survive_a_restart_on_the_same_sqlite_file(tmp_path: Path) -> None:
    world = World()
    db = tmp_path / "runs.db"
    world.crash_at = ("b2", 3)
    async with SQLiteBackend(db) as backend:
        with pytest.raises(Crash):
            await Flujo(loop_pipeline(world), context_model=Ctx, state_backend=backend).run_async(
                0, run_id="r"
            )
    world.crash_at = None
    # A new process would see only the file: a new backend object and a new runner.
    async with SQLiteBackend(db) as backend:
        positions = await backend.load_positions("r")
        assert sorted(positions) == sorted(
            position_key(p)
            for p in [
                ("L", 1, "b1"),
                ("L", 1, "b2"),
                ("L", 2, "b1"),
                ("L", 2, "b2"),
                ("L", 3, "b1"),
            ]
        )
        result = await Flujo(
            loop_pipeline(world), context_model=Ctx, state_backend=backend
        ).resume_async("r")
    assert result.success and result.output == 10
    assert world.calls == Counter({"s0": 1, "b1": 4, "b2": 5, "s_end": 1})


def test_position_keys_keep_names_and_iterations_apart() -> None:
    assert position_key(("L", 1, "a")) == '["L",1,"a"]'
    assert position_key(("L", "1", "a")) != position_key(("L", 1, "a"))
    assert position_key(("a/b",)) != position_key(("a", "b"))
    assert position_key(("ü",)) == '["ü"]'


@given(
    st.lists(
        st.one_of(st.text(), st.integers(), st.booleans(), st.floats(allow_nan=False)),
        max_size=6,
    )
)
def test_a_position_key_is_the_json_of_the_position(parts: list[Any]) -> None:
    position = tuple(parts)
    assert position_key(position) == json.dumps(position, ensure_ascii=False, separators=(",", ":"))


async def test_the_state_backends_pass_the_position_checks(tmp_path: Path) -> None:
    await check_state_backend(InMemoryStateBackend)
    counter = iter(range(100))
    await check_state_backend(lambda: SQLiteBackend(tmp_path / f"{next(counter)}.db"))


async def test_a_schema_2_store_is_migrated_to_3_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    async with SQLiteBackend(path) as backend:
        await backend.save_state("old", _checkpoint("old"))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE positions")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    async with SQLiteBackend(path) as backend:
        snap = await backend.load_state("old")
        assert snap is not None and snap.pipeline_fingerprint == "fp"
        await backend.save_positions([PositionRecord(run_id="old", position="k", record=[1])])
        assert await backend.load_positions("old") == {"k": [1]}
    conn = sqlite3.connect(path)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == ("3",)


def _checkpoint(run_id: str) -> Any:
    from flujo_actors.backends.state import RunCheckpoint

    return RunCheckpoint(
        run_id=run_id,
        pipeline_name="p",
        status="running",
        next_step_index=0,
        context={},
        initial_input=None,
        pipeline_fingerprint="fp",
    )


async def test_without_a_backend_nothing_is_recorded() -> None:
    world = World()
    result = await Flujo(loop_pipeline(world), context_model=Ctx).run_async(0)
    assert result.success and world.calls["b1"] == 4


async def test_completed_map_items_are_not_rerun(autojump_clock: trio.abc.Clock) -> None:
    world = World()

    def build() -> Pipeline:
        square = world.step("item")
        return Pipeline.from_step(
            Step.map("M", square, items=lambda data, ctx: [1, 2, 3, 4], max_concurrency=1)
        )

    # The third item's body crashes: items 0 and 1 completed and are replayed.
    resumed = await crash_then_resume(build, world, ("item", 3), InMemoryStateBackend())
    assert world.calls["item"] == 5  # 4 items + the crashed one again
    assert world.committed["item"] == 2
    clean = await Flujo(build(), context_model=Ctx).run_async(0)
    assert resumed.output == clean.output == [2, 3, 4, 5]
    assert shape(resumed) == shape(clean)


async def test_an_updates_context_step_replays_its_context_effect() -> None:
    crash = {"on": True}

    def build() -> Pipeline:
        def bump(x: int) -> dict[str, int]:  # no context parameter: writes via updates_context
            return {"total": x + 10}

        def after(x: Any, *, context: Ctx) -> int:
            if crash["on"]:
                raise Crash()
            return context.total

        body = Step.from_callable(bump, updates_context=True) >> Step.from_callable(after)
        return Pipeline.from_step(Step.loop_until("L", body, lambda out, ctx: True, max_loops=1))

    backend = InMemoryStateBackend()
    with pytest.raises(Crash):
        await Flujo(build(), context_model=Ctx, state_backend=backend).run_async(1, run_id="r")
    crash["on"] = False
    resumed = await Flujo(build(), context_model=Ctx, state_backend=backend).resume_async("r")
    assert resumed.output == 11 and resumed.final_pipeline_context.total == 11


async def test_a_router_does_not_route_again_on_resume() -> None:
    world = World()
    choices = iter([["x", "y"], ["y"]])  # asked again, it would choose differently
    routed: list[list[str]] = []

    def build() -> Pipeline:
        def route(data: Any) -> list[str]:
            choice = next(choices)
            routed.append(choice)
            return choice

        branches: dict[str, Step | Pipeline] = {
            "x": world.step("x1"),
            "y": world.step("y1") >> world.step("y2"),
        }
        return Pipeline.from_step(Step.dynamic_parallel_branch("R", route, branches))

    resumed = await crash_then_resume(build, world, ("y2", 1), InMemoryStateBackend())
    assert routed == [["x", "y"]]  # replayed from its checkpoint
    assert resumed.output == {"x": 1, "y": 2}
    assert resumed.step_history[0].metadata["selected_branches"] == ["x", "y"]
    assert world.calls == Counter({"x1": 1, "y1": 1, "y2": 2})
