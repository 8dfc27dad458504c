"""The benchmark harness core: units, targets, scenarios, measuring, raw-trio baselines.

No assertion here depends on speed: figures come from self-timed workloads (which
report the seconds they "took"), so they are exact.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

import flujo_actors.bench
from flujo_actors.bench import BenchError, Scenario, Target, Unavailable, Unit, Workload, baselines
from flujo_actors.bench.harness import MeasureOptions, measure, run_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

FAST = MeasureOptions(repeat=3, min_time_s=0.001, budget_s=1.0, quick=True)


def fixed(seconds_per_op: float) -> Callable[[int], Workload]:
    """A factory whose calls report ``seconds_per_op * size`` seconds without waiting."""

    def prepare(size: int) -> Workload:
        async def once() -> float:
            await trio.lowlevel.checkpoint()
            return seconds_per_op * size

        return Workload(once, ops=size)

    return prepare


def failing(exc: Exception) -> Callable[[int], Workload]:
    def prepare(size: int) -> Workload:
        async def once() -> None:
            raise exc

        return Workload(once)

    return prepare


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "kind", "seconds", "ops", "figure"),
    [
        ("us/step", "per_op", 0.002, 100, 20.0),
        ("ms/run", "per_op", 0.5, 1, 500.0),
        ("ms", "per_call", 0.25, 1000, 250.0),
        ("s", "per_call", 3.0, 1, 3.0),
        ("msg/s", "rate", 2.0, 1000, 500.0),
        ("updates/s", "rate", 0.5, 10, 20.0),
    ],
)
def test_unit_figure(text: str, kind: str, seconds: float, ops: int, figure: float) -> None:
    unit = Unit.parse(text)
    assert unit.kind == kind
    assert unit.higher_is_better == (kind == "rate")
    assert unit.figure(seconds, ops) == pytest.approx(figure)


@pytest.mark.parametrize("text", ["", "furlongs", "us/", "s/s", "us per step", "ms/s"])
def test_unit_rejects_unknown_forms(text: str) -> None:
    with pytest.raises(
        ValueError, match=r"^unit .* is not understood: use a time per op such as 'us/step'"
    ):
        Unit.parse(text)


# --------------------------------------------------------------------------- targets


def test_target_labels_and_evaluation() -> None:
    assert Target(max=25.0).label("us/step") == "<= 25 us/step"
    assert Target(min=50_000).label("updates/s") == ">= 50,000 updates/s"
    assert Target(max=2048, metric="peak_rss_mib").label("ms") == "RSS <= 2,048 MiB"
    assert Target(max=2, metric="vs_reference").label("us/step") == "vs ref <= 2"
    assert Target(max=300, metric="rss_delta_mib").label("s") == "RSS growth <= 300 MiB"
    result = Target(max=25.0).evaluate(30.0, "us/step")
    assert (result.passed, result.actual, result.label) == (False, 30.0, "<= 25 us/step")
    assert Target(min=1.0, max=2.0).evaluate(1.5, "ms").passed is True
    assert Target(max=1.0).evaluate(None, "ms").passed is None


def test_target_needs_a_bound() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Target needs max=\.\.\. and/or min=\.\.\.; Target\(\) checks nothing\.$",
    ):
        Target()


# --------------------------------------------------------------------------- scenario


def test_scenario_validation() -> None:
    with pytest.raises(ValueError, match="must be dotted lowercase words"):
        Scenario(name="NoGroup", measure=fixed(1.0), unit="ms")
    with pytest.raises(ValueError, match="unit 'parsecs' is not understood"):
        Scenario(name="a.b", measure=fixed(1.0), unit="parsecs")
    with pytest.raises(
        ValueError,
        match=r"^Scenario sizes must be a non-empty tuple of positive ints, got \[1, 2\]\.$",
    ):
        Scenario(name="a.b", measure=fixed(1.0), unit="ms", sizes=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Scenario quick_sizes must be a non-empty tuple"):
        Scenario(name="a.b", measure=fixed(1.0), unit="ms", quick_sizes=(0,))


def test_scenario_sizes_and_group() -> None:
    s = Scenario(
        name="parallel.wide", measure=fixed(1.0), unit="ms", sizes=(10, 1000), quick_sizes=(10,)
    )
    assert s.group == "parallel"
    assert s.sizes_for(quick=False) == (10, 1000)
    assert s.sizes_for(quick=True) == (10,)
    assert Scenario(name="a.b", measure=fixed(1.0), unit="ms", sizes=(5,)).sizes_for(
        quick=True
    ) == (5,)


# --------------------------------------------------------------------------- measuring


async def test_measure_self_timed_is_exact_and_calibrates_loops() -> None:
    stats = await measure(fixed(0.0001), 10, Unit.parse("us/op"), FAST)
    assert stats.median == stats.min == stats.max == pytest.approx(100.0)
    assert stats.repeats == 3
    assert stats.ops == 10
    assert stats.loops == 1  # the first call "took" 1 ms >= min_time_s
    assert stats.seconds_per_call == pytest.approx(0.001)
    assert len(stats.samples) == 3

    tiny = await measure(fixed(1e-6), 1, Unit.parse("us/op"), FAST)
    assert tiny.loops == 1000  # batched to reach min_time_s (1 ms)


async def test_measure_without_warmup_makes_single_call_repeats() -> None:
    stats = await measure(fixed(1e-6), 1, Unit.parse("ms"), FAST, False)
    assert stats.loops == 1


async def test_measure_accepts_async_context_manager_and_awaitable_factories() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def managed(size: int) -> AsyncIterator[Workload]:
        events.append("enter")
        yield fixed(0.001)(size)
        events.append("exit")

    async def awaited(size: int) -> Workload:
        return fixed(0.001)(size)

    assert (await measure(managed, 2, Unit.parse("ms"), FAST)).median == pytest.approx(2.0)
    assert events == ["enter", "exit"]
    assert (await measure(awaited, 3, Unit.parse("ms"), FAST)).median == pytest.approx(3.0)


async def test_measure_rejects_a_factory_returning_something_else() -> None:
    with pytest.raises(TypeError, match="expected a Workload"):
        await measure(lambda size: size, 1, Unit.parse("ms"), FAST)  # type: ignore[arg-type,return-value]


def test_run_case_ok_with_ratio_reference_targets_and_rss() -> None:
    scenario = Scenario(
        name="tiny.fixed",
        measure=fixed(0.002),
        baseline=fixed(0.001),
        baseline_label="half the time",
        reference=fixed(0.004),
        reference_label="twice the time",
        unit="ms/op",
        sizes=(4,),
        targets=(
            Target(max=1.0),
            Target(max=3.0, metric="ratio"),
            Target(max=1.0, at_size=99),
            Target(max=0.5, metric="over_baseline"),
        ),
    )
    result = run_case(scenario, 4, FAST)
    assert result.status == "ok"
    assert result.error is None
    assert result.figure is not None
    assert result.figure.median == pytest.approx(2.0)
    assert result.ratio == pytest.approx(2.0)
    assert result.vs_reference == pytest.approx(0.5)
    assert [(t.label, t.passed) for t in result.targets] == [
        ("<= 1 ms/op", False),
        ("ratio <= 3", True),
        ("over raw trio <= 0.5 ms/op", False),  # 2 ms - 1 ms
    ]
    assert result.peak_rss_mib is None or result.peak_rss_mib > 0
    assert result.label == "tiny.fixed[4]"
    assert not result.higher_is_better


def test_run_case_reports_errors_and_unavailable_code() -> None:
    broken = Scenario(name="tiny.broken", measure=failing(RuntimeError("boom")), unit="ms")
    result = run_case(broken, 1, FAST)
    assert result.status == "error"
    assert result.figure is None
    assert result.error is not None
    assert result.error.startswith("RuntimeError: boom (at test_bench_harness.py:")
    assert result.error_detail is not None
    assert "Traceback" in result.error_detail

    for exc in (Unavailable("Supervisor is not written yet"), NotImplementedError("later")):
        missing = Scenario(name="tiny.missing", measure=failing(exc), unit="ms")
        assert run_case(missing, 1, FAST).status == "unavailable"

    wrong = Scenario(
        name="tiny.wrong", measure=failing(BenchError("output 3, expected 4")), unit="ms"
    )
    outcome = run_case(wrong, 1, FAST)
    assert outcome.status == "error"
    assert outcome.error is not None
    assert outcome.error.startswith("BenchError: output 3, expected 4")


def test_run_case_keeps_the_figure_when_the_baseline_fails() -> None:
    scenario = Scenario(
        name="tiny.half",
        measure=fixed(0.001),
        baseline=failing(ValueError("bad baseline")),
        unit="ms",
    )
    result = run_case(scenario, 1, FAST)
    assert result.status == "error"
    assert result.figure is not None
    assert result.ratio is None
    assert result.error is not None
    assert result.error.startswith("baseline failed: ValueError: bad baseline")


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize(
    "factory",
    [
        baselines.chain,
        baselines.retry_chain,
        partial(baselines.cached_chain, hit=True),
        partial(baselines.cached_chain, hit=False),
        partial(baselines.fanout, merge=True),
        partial(baselines.fanout, merge=False),
        baselines.request_loop,
        baselines.router,
        baselines.ledger_flood,
        baselines.restart_storm,
        baselines.channel_flood,
        baselines.stream,
    ],
)
async def test_raw_trio_baselines_run_and_check_themselves(
    factory: Callable[[int], Workload],
) -> None:
    workload = factory(10)
    assert workload.ops >= 1
    for _ in range(2):
        assert await workload.run() is None


async def test_sqlite_baseline_commits_rows() -> None:
    async with baselines.sqlite_chain(5) as workload:
        await workload.run()
        await workload.run()
        assert workload.ops == 5


# --------------------------------------------------------------------------- package hygiene


def test_every_bench_module_has_dunder_all() -> None:
    names = [
        info.name
        for info in pkgutil.walk_packages(flujo_actors.bench.__path__, "flujo_actors.bench.")
    ]
    assert "flujo_actors.bench.harness" in names
    missing = [name for name in names if not hasattr(importlib.import_module(name), "__all__")]
    assert missing == []


def test_importing_the_harness_imports_no_optional_dependency() -> None:
    code = (
        "import sys, flujo_actors.bench; "
        "print([m for m in ('rich', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_target_can_judge_the_rss_growth_of_a_case() -> None:
    scenario = Scenario(
        name="tiny.growth",
        measure=fixed(0.001),
        unit="ms",
        sizes=(1,),
        targets=(
            Target(max=100_000.0, metric="rss_delta_mib"),
            Target(min=1e9, metric="rss_delta_mib"),
        ),
    )
    result = run_case(scenario, 1, FAST)
    assert result.rss_delta_mib is not None and result.rss_delta_mib >= 0
    assert [(t.label, t.actual, t.passed) for t in result.targets] == [
        ("RSS growth <= 100,000 MiB", result.rss_delta_mib, True),
        ("RSS growth >= 1e+09 MiB", result.rss_delta_mib, False),
    ]
