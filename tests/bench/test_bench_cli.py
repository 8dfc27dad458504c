"""The bench CLI end to end on tiny synthetic scenarios in a temporary --scenarios-dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

import flujo_actors.bench.cli as cli
from flujo_actors.bench.cli import EXIT_REGRESSION, EXIT_STRICT, EXIT_USAGE, main
from flujo_actors.bench.discovery import discover
from flujo_actors.bench.progress import PlainDisplay, open_display
from flujo_actors.bench.report import Report

# Self-timed workloads: each call reports size x 1 ms (figure) or 0.5 ms (baseline),
# so figures are exact: 1000 us/op, ratio 2.0, whatever the machine.
TINY = """
from __future__ import annotations

import trio

from flujo_actors.bench import Scenario, Target, Workload, baselines


def fixed(seconds_per_op: float):
    def prepare(size: int) -> Workload:
        async def once() -> float:
            await trio.lowlevel.checkpoint()
            return seconds_per_op * size

        return Workload(once, ops=size)

    return prepare


def crash(size: int) -> Workload:
    async def once() -> None:
        raise RuntimeError("the runtime fell over")

    return Workload(once)


SCENARIOS = [
    Scenario(
        name="tiny.fixed",
        description="reports 1 ms per op",
        measure=fixed(0.001),
        baseline=fixed(0.0005),
        baseline_label="reports 0.5 ms per op",
        unit="us/op",
        sizes=(10, 100, 1000),
        quick_sizes=(10, 100),
        targets=(Target(max=1500.0), Target(max=1.5, metric="ratio", at_size=100)),
    ),
    Scenario(name="tiny.real", measure=baselines.chain, unit="us/step", sizes=(3,)),
    Scenario(name="other.crash", measure=crash, unit="ms"),
]
"""

BROKEN = "from flujo_actors import NotWrittenYet  # noqa: F401\n"
SYNTAX = "SCENARIOS = [\n"


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "scenarios"
    directory.mkdir()
    (directory / "bench_tiny.py").write_text(textwrap.dedent(TINY), encoding="utf-8")
    (directory / "bench_missing.py").write_text(BROKEN, encoding="utf-8")
    (directory / "bench_typo.py").write_text(SYNTAX, encoding="utf-8")
    (directory / "helper.py").write_text("raise SystemExit('never imported')\n", encoding="utf-8")
    return directory


def run_args(scenarios_dir: Path, *extra: str) -> list[str]:
    # Fast and in-process: 1 ms calibration, one repeat, no worker processes.
    return [
        "run",
        "--scenarios-dir",
        str(scenarios_dir),
        "--plain",
        "--in-process",
        "--quick",
        "--repeat",
        "2",
        "--min-time",
        "0.001",
        *extra,
    ]


def test_discovery_reports_broken_modules_as_rows(scenarios_dir: Path) -> None:
    found = discover(scenarios_dir)
    assert [f.scenario.name for f in found.found] == ["tiny.fixed", "tiny.real", "other.crash"]
    failures = {f.name: f for f in found.failures}
    assert set(failures) == {"missing.*", "typo.*"}
    assert failures["missing.*"].status == "unavailable"
    assert failures["missing.*"].error.startswith(
        "ImportError: cannot import name 'NotWrittenYet' from 'flujo_actors'"
    )
    assert failures["typo.*"].status == "error"
    assert failures["typo.*"].error.startswith("SyntaxError: ")


def test_discovery_selects_by_name_glob_and_group(scenarios_dir: Path) -> None:
    found = discover(scenarios_dir)
    chosen, failed, unmatched = found.select(["tiny.*", "nope"])
    assert [f.scenario.name for f in chosen] == ["tiny.fixed", "tiny.real"]
    assert failed == ()
    assert unmatched == ["nope"]
    chosen, failed, unmatched = found.select(["other", "missing.x"])
    assert [f.scenario.name for f in chosen] == ["other.crash"]
    assert [f.name for f in failed] == ["missing.*"]
    assert unmatched == []


def test_discovery_flags_duplicate_names_and_bad_scenarios(tmp_path: Path) -> None:
    (tmp_path / "bench_a.py").write_text(textwrap.dedent(TINY), encoding="utf-8")
    (tmp_path / "bench_b.py").write_text(textwrap.dedent(TINY), encoding="utf-8")
    (tmp_path / "bench_c.py").write_text("SCENARIOS = ['not a scenario']\n", encoding="utf-8")
    (tmp_path / "bench_d.py").write_text("X = 1\n", encoding="utf-8")
    errors = [f.error for f in discover(tmp_path).failures]
    assert errors[0] == "scenario 'tiny.fixed' is also declared in bench_a.py; names must be unique"
    assert (
        "TypeError: bench_c.py: SCENARIOS must be a list of flujo_actors.bench.Scenario"
        in errors[-2]
    )
    assert errors[-1].startswith("TypeError: bench_d.py defines no SCENARIOS list")


def test_list(scenarios_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--scenarios-dir", str(scenarios_dir), "--plain"]) == 0
    out = capsys.readouterr().out
    assert f"3 scenario(s) in {scenarios_dir}" in out
    assert "tiny.fixed  [us/op]  sizes 10, 100, 1,000 (quick: 10, 100)" in out
    assert "    raw trio baseline: reports 0.5 ms per op" in out
    assert "    target: ratio <= 1.5 at size 100" in out
    assert "missing.*  UNAVAILABLE: ImportError: cannot import name 'NotWrittenYet'" in out


def test_run_end_to_end_in_process(
    scenarios_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "out" / "latest.json"
    status = main(run_args(scenarios_dir, "--json", str(out_json)))
    out = capsys.readouterr().out
    assert status == 0  # errors and missed targets only fail with --strict
    lines = out.splitlines()
    assert lines[0].startswith(
        f"flujo_actors benchmarks: 4 case(s) from {scenarios_dir} (quick: up to 2 repeats"
    )
    assert "[1/6] missing.*: UNAVAILABLE: ImportError: cannot import name 'NotWrittenYet'" in out
    assert any(
        line.startswith(
            "[3/6] tiny.fixed[10]: 1,000 us/op (min 1,000, max 1,000, 2x1); raw trio 500 -> x2.00"
        )
        for line in lines
    )
    assert "PASS <= 1,500 us/op; FAIL ratio <= 1.5" in out
    assert (
        "[6/6] other.crash[1]: ERROR: RuntimeError: the runtime fell over (at bench_tiny.py:" in out
    )
    table = [line.split() for line in lines if line.startswith("tiny.fixed ")]
    assert " ".join(table[0][:8]) == "tiny.fixed 10 1,000 1,000-1,000 us/op 2x1 500 x2.00"
    assert "Problems:" in out
    assert "Scaling (time per call vs input size; x10 per 10x is linear)" in out
    assert any(
        line.split()[:2] == ["tiny.fixed", "us/op"] and "linear (n^1.00)" in line for line in lines
    )
    assert "6 case(s): 3 ok, 2 error(s), 1 unavailable; targets 2/3 met" in out
    assert f"wrote {out_json}" in out

    report = Report.load(out_json)
    assert [(r.scenario, r.size, r.status) for r in report.results] == [
        ("missing.*", None, "unavailable"),
        ("typo.*", None, "error"),
        ("tiny.fixed", 10, "ok"),
        ("tiny.fixed", 100, "ok"),
        ("tiny.real", 3, "ok"),
        ("other.crash", 1, "error"),
    ]
    fixed = report.results[2]
    assert fixed.figure is not None
    assert fixed.figure.median == pytest.approx(1000.0)
    assert fixed.ratio == pytest.approx(2.0)
    assert not fixed.isolated
    assert report.options.quick
    assert report.options.isolated is False
    assert report.machine.cpu_count == os.cpu_count()
    assert [row.scenario for row in report.scaling] == ["tiny.fixed"]


def test_run_is_the_default_command(
    scenarios_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = run_args(scenarios_dir, "tiny.real")[1:]
    assert main(args) == 0
    assert main(["tiny.real", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("[1/1] tiny.real[3]: ") == 2


def test_strict_exit_status(scenarios_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run_args(scenarios_dir, "tiny.real", "--strict")) == 0
    assert main(run_args(scenarios_dir, "other.crash", "--strict")) == EXIT_STRICT
    assert main(run_args(scenarios_dir, "tiny.fixed", "--strict")) == EXIT_STRICT  # a missed target
    capsys.readouterr()


def test_unknown_scenario_is_a_usage_error(
    scenarios_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(scenarios_dir, "nothing.like.this")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        f"flujo-actors-bench: no scenario matches 'nothing.like.this' in {scenarios_dir}; "
        "`flujo-actors-bench list` shows them.\n"
    )


def test_missing_scenarios_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--scenarios-dir", str(tmp_path / "nope")]) == EXIT_USAGE
    assert "does not exist (pass --scenarios-dir DIR)" in capsys.readouterr().err


def _old_report(scenarios_dir: Path, tmp_path: Path, *, factor: float) -> Path:
    """A report of tiny.fixed whose figures are ``factor`` times today's."""
    path = tmp_path / "old.json"
    assert main(run_args(scenarios_dir, "tiny.fixed", "--json", str(path))) == 0
    report = Report.load(path)
    results = tuple(
        attrs.evolve(r, figure=attrs.evolve(r.figure, median=r.figure.median * factor))
        if r.figure
        else r
        for r in report.results
    )
    attrs.evolve(report, results=results).write(path)
    return path


def test_compare_exit_status_only_with_fail_on_regression(
    scenarios_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _old_report(scenarios_dir, tmp_path, factor=0.5)  # today is twice as slow
    capsys.readouterr()
    assert main(run_args(scenarios_dir, "tiny.fixed", "--compare", str(old))) == 0
    out = capsys.readouterr().out
    assert "Compared with the old report (figure; threshold 10 %)" in out
    row = next(
        line
        for line in out.splitlines()
        if line.startswith("tiny.fixed[10]") and "REGRESSION" in line
    )
    assert row.split() == ["tiny.fixed[10]", "us/op", "500", "1,000", "+100.0", "%", "REGRESSION"]
    assert "2 regression(s) beyond 10 %" in out

    assert (
        main(run_args(scenarios_dir, "tiny.fixed", "--compare", str(old), "--fail-on-regression"))
        == EXIT_REGRESSION
    )
    assert (
        main(
            run_args(
                scenarios_dir,
                "tiny.fixed",
                "--compare",
                str(old),
                "--fail-on-regression",
                "--threshold",
                "150",
            )
        )
        == 0
    )

    new = tmp_path / "new.json"
    assert main(run_args(scenarios_dir, "tiny.fixed", "--json", str(new))) == 0
    assert main(["compare", str(old), str(new), "--plain"]) == 0
    assert main(["compare", str(old), str(new), "--fail-on-regression"]) == EXIT_REGRESSION
    assert main(["compare", str(new), str(new), "--fail-on-regression"]) == 0
    capsys.readouterr()


def test_bad_compare_file_fails_before_running(
    scenarios_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}', encoding="utf-8")
    assert main(run_args(scenarios_dir, "--compare", str(bogus))) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"flujo-actors-bench: --compare: {bogus} is not a flujo_actors benchmark report"
    )


def test_plot_without_matplotlib_says_so(
    scenarios_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("flujo_actors.bench.plot.matplotlib_available", lambda: False)
    png = tmp_path / "scaling.png"
    assert main(run_args(scenarios_dir, "tiny.fixed", "--plot", str(png))) == 0
    assert (
        f"--plot {png}: matplotlib is not installed (pip install 'flujo-actors[bench]'); no plot written."
        in capsys.readouterr().out
    )
    assert not png.exists()


def test_threshold_and_repeat_validation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--repeat", "0"])
    assert exc.value.code == EXIT_USAGE
    with pytest.raises(SystemExit):
        main(["run", "--threshold", "ten"])
    err = capsys.readouterr().err
    assert "argument --repeat: must be >= 1, got 0" in err
    assert "argument --threshold: expected a percentage such as 10 or 2.5%, got 'ten'" in err


def test_help_lists_commands_and_hides_the_worker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "{list,run,compare}" in out
    assert "_worker" not in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--quick",
        "--repeat N",
        "--json PATH",
        "--compare OLD.json",
        "--threshold PCT",
        "--fail-on-regression",
        "--plain",
        "--scenarios-dir DIR",
        "--plot PATH",
    ):
        assert option in out


def test_display_is_plain_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(open_display(sys.stdout), PlainDisplay)


def test_rich_display_renders(tmp_path: Path) -> None:
    import io

    from flujo_actors.bench.progress import RichDisplay
    from flujo_actors.bench.report import CaseResult, results_table

    stream = io.StringIO()
    display = RichDisplay(stream, width=160)
    display.start(1)
    display.case_started("tiny.fixed[10]")
    result = CaseResult(scenario="tiny.[x]", size=10, status="error", error="KeyError: [bold]")
    display.case_finished(result)
    display.stop()
    display.table(results_table([result]))
    out = stream.getvalue()
    assert "tiny.[x][10]: ERROR: KeyError: [bold]" in out  # markup in messages is escaped
    assert "┃ scenario ┃" in out
    row = next(line for line in out.splitlines() if line.startswith("│ tiny.[x]"))
    assert row.split("│")[1:4] == [" tiny.[x] ", "   10 ", "  ERROR "]


def test_python_m_runs_isolated_workers(scenarios_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "iso.json"
    root = Path(cli.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flujo_actors.bench",
            "run",
            "tiny.fixed",
            "tiny.real",
            "--quick",
            "--repeat",
            "1",
            "--min-time",
            "0.001",
            "--scenarios-dir",
            str(scenarios_dir),
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "[1/3] tiny.fixed[10]: 1,000 us/op" in done.stdout  # not a TTY: plain
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert [(r["scenario"], r["size"], r["status"], r["isolated"]) for r in report["results"]] == [
        ("tiny.fixed", 10, "ok", True),
        ("tiny.fixed", 100, "ok", True),
        ("tiny.real", 3, "ok", True),
    ]
    assert report["results"][0]["peak_rss_mib"] > 0


def test_plot_writes_a_png_when_matplotlib_is_installed(tmp_path: Path) -> None:
    from flujo_actors.bench.plot import plot_scaling
    from flujo_actors.bench.report import ScalingPoint, ScalingRow, scaling_rows

    assert plot_scaling(scaling_rows([]), tmp_path / "none.png").endswith("nothing to plot.")
    row = ScalingRow(
        scenario="a.b",
        unit="ms",
        points=(
            ScalingPoint(
                size=10, figure=1.0, seconds_per_call=0.001, baseline_seconds_per_call=0.0005
            ),
            ScalingPoint(
                size=100, figure=10.0, seconds_per_call=0.01, baseline_seconds_per_call=0.005
            ),
        ),
        growth=(),
        verdict="linear",
    )
    png = tmp_path / "plot.png"
    assert plot_scaling([row], png) == f"wrote the scaling plot to {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
