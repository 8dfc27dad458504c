"""The report: JSON schema round trip, scaling verdicts, comparison, text tables."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import attrs
import pytest

from flujo_actors.bench.report import (
    SCHEMA,
    SCHEMA_VERSION,
    CaseResult,
    MachineInfo,
    Report,
    ReportError,
    RunOptions,
    Stats,
    TargetResult,
    compare,
    compare_table,
    format_number,
    results_table,
    scaling_rows,
    scaling_table,
    summarize,
)

if TYPE_CHECKING:
    from pathlib import Path

MACHINE = MachineInfo(
    cpu_count=2,
    cpu_model="Test CPU",
    python="3.11.7",
    implementation="CPython",
    platform="Linux",
    trio="0.35.0",
    attrs="26.1.0",
    cattrs="26.2.1",
    flujo_actors="0.1.0",
    git_commit="0123456789abcdef",
    git_dirty=False,
)
OPTIONS = RunOptions(
    quick=True, repeat=3, min_time_s=0.02, budget_s=4.0, isolated=True, patterns=("a.*",)
)


def stats(median: float, seconds_per_call: float | None = None) -> Stats:
    return Stats(
        median=median,
        min=median * 0.9,
        max=median * 1.1,
        repeats=3,
        loops=2,
        ops=10,
        seconds_per_call=median / 1000 if seconds_per_call is None else seconds_per_call,
        samples=(median * 0.9, median, median * 1.1),
    )


def case(
    name: str,
    size: int | None,
    median: float | None,
    *,
    unit: str = "ms",
    rate: bool = False,
    **kw: object,
) -> CaseResult:
    figure = None if median is None else stats(median, kw.pop("seconds_per_call", None))  # type: ignore[arg-type]
    return CaseResult(
        scenario=name,
        size=size,
        status="ok" if figure else "error",
        unit=unit,
        figure=figure,
        higher_is_better=rate,
        **kw,  # type: ignore[arg-type]
    )


#: A figure of 21.5 us/step against its "<= 25 us/step" target.
MET_25 = TargetResult(
    metric="figure",
    label="<= 25 us/step",
    max=25.0,
    min=None,
    at_size=None,
    actual=21.5,
    passed=True,
)


def report(*results: CaseResult) -> Report:
    return Report(
        created_at="2025-01-01T00:00:00+00:00",
        options=OPTIONS,
        machine=MACHINE,
        results=results,
        scaling=scaling_rows(results),
    )


def test_json_round_trip_is_lossless() -> None:
    full = attrs.evolve(
        case("seq.trivial", 100, 21.5, unit="us/step"),
        baseline=stats(17.0),
        baseline_label="raw chain",
        reference=stats(20.0),
        reference_label="no limit",
        ratio=21.5 / 17.0,
        vs_reference=21.5 / 20.0,
        peak_rss_mib=45.5,
        rss_delta_mib=2.25,
        targets=(MET_25,),
        wall_s=1.5,
        isolated=True,
    )
    original = report(
        full,
        case("seq.trivial", 1000, 20.0, unit="us/step"),
        CaseResult(
            scenario="cache.*",
            size=None,
            status="unavailable",
            error="ImportError: nope",
            error_detail="tb",
        ),
    )
    assert original.scaling  # seq.trivial has two sizes
    text = original.to_json()
    data = json.loads(text)
    assert list(data)[:3] == ["schema", "schema_version", "created_at"]
    assert data["schema"] == SCHEMA
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["results"][0]["figure"]["samples"] == [
        pytest.approx(19.35),
        21.5,
        pytest.approx(23.65),
    ]
    assert Report.from_json(text) == original


def test_reader_ignores_unknown_keys_from_newer_minor_versions() -> None:
    data = json.loads(report(case("a.b", 1, 1.0)).to_json())
    data["future_field"] = 1
    data["results"][0]["future_metric"] = 2.0
    assert Report.from_json(json.dumps(data)).results[0].figure == stats(1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"^r\.json is not JSON: "),
        (
            '{"schema": "other"}',
            r"^r\.json is not a flujo_actors benchmark report \(expected \"schema\": 'flujo_actors\.bench/report'\); write one with `run --json PATH`\.$",
        ),
        (
            json.dumps({"schema": SCHEMA, "schema_version": 99}),
            r"^r\.json has schema_version 99; this harness reads 1 to 1\. Re-run the benchmarks with this version to compare\.$",
        ),
        (
            json.dumps({"schema": SCHEMA, "schema_version": 1, "created_at": "x"}),
            r"^r\.json does not match the report schema: ",
        ),
    ],
)
def test_reader_rejects_foreign_or_newer_reports(text: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        Report.from_json(text, source="r.json")


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        ReportError, match=r"^cannot read .*missing\.json: No such file or directory$"
    ):
        Report.load(tmp_path / "missing.json")


def test_write_then_load(tmp_path: Path) -> None:
    original = report(case("a.b", 1, 1.0))
    path = tmp_path / "deep" / "dir" / "r.json"
    original.write(path)
    assert Report.load(path) == original


# --------------------------------------------------------------------------- scaling


def test_scaling_linear_and_superlinear() -> None:
    rows = scaling_rows(
        [
            # per call: 1 ms, 10 ms, 100 ms -> x10 per 10x
            case("lin.x", 10, 1.0, seconds_per_call=0.001),
            case("lin.x", 100, 10.0, seconds_per_call=0.010),
            case("lin.x", 1000, 100.0, seconds_per_call=0.100),
            # per call: 1 ms at 10, 100 ms at 100 -> x100 per 10x (quadratic)
            case("quad.x", 10, 1.0, seconds_per_call=0.001),
            case("quad.x", 100, 100.0, seconds_per_call=0.100),
            case("single.x", 10, 1.0),
            case("broken.x", 10, None),
            case("broken.x", 100, 1.0),
        ]
    )
    by_name = {row.scenario: row for row in rows}
    assert set(by_name) == {"lin.x", "quad.x"}
    lin = by_name["lin.x"]
    assert lin.verdict == "linear"
    assert [(g.from_size, g.to_size) for g in lin.growth] == [(10, 100), (100, 1000)]
    assert [g.factor for g in lin.growth] == [pytest.approx(10.0), pytest.approx(10.0)]
    quad = by_name["quad.x"]
    assert quad.verdict == "superlinear"
    assert quad.growth[0].exponent == pytest.approx(2.0)


def test_scaling_growth_is_normalised_per_decade() -> None:
    # 10 -> 1000 is two decades; 1 ms -> 100 ms is linear.
    (row,) = scaling_rows(
        [case("a.b", 10, 1.0, seconds_per_call=0.001), case("a.b", 1000, 1.0, seconds_per_call=0.1)]
    )
    assert row.growth[0].factor == pytest.approx(10.0)
    assert row.verdict == "linear"
    rendered = scaling_table([row]).render_plain()
    assert "a.b" in rendered
    assert "linear (n^1.00)" in rendered


# --------------------------------------------------------------------------- compare


def test_compare_flags_regressions_in_the_right_direction() -> None:
    old = report(
        case("t.slower", 1, 10.0),
        case("t.faster", 1, 10.0),
        case("t.noise", 1, 10.0),
        case("r.rate_drop", 1, 1000.0, unit="msg/s", rate=True),
        case("r.rate_rise", 1, 1000.0, unit="msg/s", rate=True),
        case("gone.x", 1, 1.0),
        case("t.broken", 1, 1.0),
    )
    new = report(
        case("t.slower", 1, 12.0),
        case("t.faster", 1, 8.0),
        case("t.noise", 1, 10.5),
        case("r.rate_drop", 1, 800.0, unit="msg/s", rate=True),
        case("r.rate_rise", 1, 1200.0, unit="msg/s", rate=True),
        case("new.x", 1, 1.0),
        case("t.broken", 1, None),
    )
    verdicts = {c.label: c.verdict for c in compare(old, new, threshold=0.10)}
    assert verdicts == {
        "t.slower[1]": "regression",
        "t.faster[1]": "improvement",
        "t.noise[1]": "same",
        "r.rate_drop[1]": "regression",
        "r.rate_rise[1]": "improvement",
        "new.x[1]": "new",
        "t.broken[1]": "n/a",
        "gone.x[1]": "missing",
    }
    assert {c.label: c.verdict for c in compare(old, new, threshold=0.25)}["t.slower[1]"] == "same"
    slower = next(c for c in compare(old, new) if c.label == "t.slower[1]")
    assert slower.change == pytest.approx(0.2)
    table = compare_table(compare(old, new), threshold=0.10, by="figure").render_plain()
    assert "t.slower[1]" in table
    assert "+20.0 %" in table
    assert "REGRESSION" in table


def test_compare_by_ratio() -> None:
    old = report(attrs.evolve(case("a.b", 1, 10.0), ratio=1.0))
    new = report(attrs.evolve(case("a.b", 1, 30.0), ratio=1.05))  # slower machine, same ratio
    (change,) = compare(old, new, by="ratio")
    assert change.verdict == "same"
    (change,) = compare(old, new, by="figure")
    assert change.verdict == "regression"


# --------------------------------------------------------------------------- text


def test_format_number() -> None:
    assert [format_number(v) for v in (None, 0.0, 0.01234, 1.234, 12.34, 123.4, 123456.7)] == [
        "-", "0", "0.0123", "1.23", "12.3", "123", "123,457",
    ]  # fmt: skip


def test_results_table_and_summary_show_real_content() -> None:
    ok = attrs.evolve(
        case("seq.trivial", 1000, 21.5, unit="us/step"),
        baseline=stats(17.2),
        ratio=1.25,
        peak_rss_mib=45.0,
        rss_delta_mib=2.0,
        targets=(MET_25,),
    )
    missing = CaseResult(
        scenario="cache.*",
        size=None,
        status="unavailable",
        error="ImportError: no InMemoryLRUBackend",
    )
    table = results_table([ok, missing])
    assert "vs ref" not in table.headers
    text = table.render_plain()
    lines = text.splitlines()
    assert lines[0] == table.title
    assert " ".join(lines[1].split()) == (
        "scenario size median min-max unit n raw trio ratio RSS MiB (+delta) target"
    )
    assert " ".join(lines[3].split()) == (
        "seq.trivial 1,000 21.5 19.4-23.7 us/step 3x2 17.2 x1.25 45.0 (+2.00) PASS <= 25 us/step"
    )
    assert lines[4].split() == ["cache.*", "UNAVAILABLE"]
    assert table.styles == ("", "yellow")
    assert (
        summarize(ok)
        == "seq.trivial[1,000]: 21.5 us/step (min 19.4, max 23.7, 3x2); raw trio 17.2 -> x1.25; RSS 45.0 MiB; PASS <= 25 us/step"
    )
    assert summarize(missing) == "cache.*: UNAVAILABLE: ImportError: no InMemoryLRUBackend"


def test_machine_busy_and_load() -> None:
    assert not MACHINE.busy
    assert "load average" not in MACHINE.describe()
    quiet = attrs.evolve(MACHINE, load_before=0.4, load_after=1.1)
    assert not quiet.busy
    assert quiet.describe().endswith("load average (1 min): 0.40 before the run, 1.10 after")
    assert attrs.evolve(MACHINE, load_before=1.6).busy


def test_machine_description() -> None:
    text = MACHINE.describe()
    assert "2 CPU(s), Test CPU; CPython 3.11.7 on Linux" in text
    assert "trio 0.35.0, attrs 26.1.0, cattrs 26.2.1; flujo_actors 0.1.0 @ 0123456789" in text
