"""The ``flujo-actors-bench`` / ``python -m flujo_actors.bench`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from .discovery import Discovery, Found, default_scenarios_dir, discover
from .harness import FULL, QUICK, MeasureOptions, run_case
from .plot import plot_scaling
from .progress import Display, open_display
from .report import (
    CaseResult,
    Report,
    ReportError,
    RunOptions,
    compare,
    compare_table,
    problems,
    results_table,
    scaling_rows,
    scaling_table,
    utc_now,
)
from .sysinfo import load_average, machine_info
from .worker import WORKER_COMMAND, run_isolated, worker_main

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EXIT_REGRESSION", "EXIT_STRICT", "EXIT_USAGE", "build_parser", "main"]

_COMMANDS: Final = ("list", "run", "compare", WORKER_COMMAND)

EXIT_REGRESSION: Final = 1
EXIT_USAGE: Final = 2
EXIT_STRICT: Final = 3
_EXIT_INTERRUPTED: Final = 130

_DESCRIPTION = """\
Stress benchmarks for flujo_actors. Each scenario (declared in benchmarks/bench_*.py)
is measured next to a raw-trio program of the same shape, in a fresh process, on
trio's real clock; the table shows the figure, the ratio to raw trio, peak RSS and the
scenario's targets, then how multi-size scenarios scale.
"""

_EPILOG = """\
examples:
  %(prog)s list                          what can run, with sizes and targets
  %(prog)s run --quick                   the quick suite (what `make bench` runs)
  %(prog)s run 'parallel.*' --repeat 10  one group, more repeats
  %(prog)s run --quick --json new.json --compare old.json --fail-on-regression
  %(prog)s compare old.json new.json     compare two saved reports

exit status: 0 ok; 1 regressions (with --fail-on-regression); 2 usage error;
3 errors, unavailable scenarios or missed targets (with --strict); 130 interrupted.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage such as 10 or 2.5%, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value / 100


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        type=_percent,
        default=0.10,
        metavar="PCT",
        help="a change worse than this many percent is a regression (default: 10)",
    )
    parser.add_argument(
        "--compare-by",
        choices=("figure", "ratio"),
        default="figure",
        help="compare the figures (same machine; default) or the ratios to raw trio (across machines)",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit with status 1 when a regression is found",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    parser = argparse.ArgumentParser(
        prog="flujo-actors-bench",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="{list,run,compare}")

    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--scenarios-dir",
        type=Path,
        metavar="DIR",
        help="where the bench_*.py scenario modules are (default: ./benchmarks, else the repository's)",
    )
    shared.add_argument(
        "--plain",
        action="store_true",
        help="plain text output (automatic when not a terminal or rich is missing)",
    )

    listing = commands.add_parser(
        "list", parents=[shared], help="list the scenarios, their sizes and targets"
    )
    listing.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="names or glob patterns (default: all)"
    )

    run = commands.add_parser(
        "run",
        parents=[shared],
        help="run scenarios and print the report (the default command)",
        description="Run scenarios (all, or those named) and print the results, scaling and comparison.",
    )
    run.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help="names or glob patterns, e.g. sequential.trivial 'parallel.*' or a group name (default: all)",
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help="quick sizes and fewer, shorter repeats (the make bench suite)",
    )
    run.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="N",
        help="timed repeats per workload (default: 3 quick, 7 full)",
    )
    run.add_argument(
        "--min-time",
        type=_positive_float,
        metavar="S",
        help="calls are batched so a repeat lasts at least S seconds",
    )
    run.add_argument(
        "--budget",
        type=_positive_float,
        metavar="S",
        help="stop repeating a workload after S seconds (default: 4 quick, 20 full)",
    )
    run.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="write the report as JSON (schema: flujo_actors.bench.report)",
    )
    run.add_argument(
        "--compare",
        type=Path,
        metavar="OLD.json",
        help="compare with a report written earlier by --json",
    )
    _add_compare_options(run)
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 3 on errors, unavailable scenarios or missed targets",
    )
    run.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="write a PNG of the scaling report (needs matplotlib)",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run every case in this process (faster start, for debugging; peak RSS is then the whole run's)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        default=600.0,
        metavar="S",
        help="kill a case's worker after S seconds (default: 600)",
    )

    comparing = commands.add_parser(
        "compare", help="compare two JSON reports without running anything"
    )
    comparing.add_argument("old", type=Path, metavar="OLD.json")
    comparing.add_argument("new", type=Path, metavar="NEW.json")
    comparing.add_argument("--plain", action="store_true", help="plain text output")
    _add_compare_options(comparing)

    worker = commands.add_parser(WORKER_COMMAND)  # internal: one case in a fresh process
    worker.add_argument("job")
    worker.add_argument("out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see ``--help``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `run` is the default command: `flujo-actors-bench --quick` or `... parallel`.
    if not args_list or args_list[0] not in (*_COMMANDS, "-h", "--help"):
        args_list.insert(0, "run")
    parser = build_parser()
    # argparse cannot take a nargs="*" positional after options (`run --quick x.*`):
    # leftover words are the scenario patterns.
    args, extra = parser.parse_known_args(args_list)
    stray = [word for word in extra if word.startswith("-")]
    if stray or (extra and args.command not in ("run", "list")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.scenarios = [*args.scenarios, *extra]
    out = sys.stdout
    if args.command == WORKER_COMMAND:
        return worker_main(args.job, args.out)
    if args.command == "compare":
        return _compare_files(args, out)
    try:
        directory = args.scenarios_dir or default_scenarios_dir()
        discovery = discover(directory)
    except FileNotFoundError as exc:
        print(f"flujo-actors-bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "list":
        return _list(discovery, args, out)
    return _run(discovery, args, out)


def _select(
    discovery: Discovery, patterns: Sequence[str]
) -> tuple[tuple[Found, ...], tuple[CaseResult, ...]] | None:
    found, failures, unmatched = discovery.select(patterns)
    if unmatched:
        names = ", ".join(repr(p) for p in unmatched)
        print(
            f"flujo-actors-bench: no scenario matches {names} in {discovery.directory}; "
            "`flujo-actors-bench list` shows them.",
            file=sys.stderr,
        )
        return None
    return found, tuple(f.as_result() for f in failures)


def _list(discovery: Discovery, args: argparse.Namespace, out: TextIO) -> int:
    selected = _select(discovery, args.scenarios)
    if selected is None:
        return EXIT_USAGE
    found, failures = selected
    display = open_display(out, plain=args.plain)
    display.text(f"{len(found)} scenario(s) in {discovery.directory}", style="bold")
    for item in found:
        s = item.scenario
        sizes = ", ".join(f"{n:,}" for n in s.sizes)
        quick = (
            "same"
            if s.quick_sizes is None or s.quick_sizes == s.sizes
            else ", ".join(f"{n:,}" for n in s.quick_sizes)
        )
        lines = [f"{s.name}  [{s.unit}]  sizes {sizes} (quick: {quick})"]
        if s.description:
            lines.append(f"    {s.description}")
        if s.baseline is not None:
            lines.append(f"    raw trio baseline: {s.baseline_label or '(undocumented)'}")
        if s.reference is not None:
            lines.append(f"    reference: {s.reference_label or '(undocumented)'}")
        for target in s.targets:
            where = "" if target.at_size is None else f" at size {target.at_size:,}"
            lines.append(f"    target: {target.label(s.unit)}{where}")
        display.text("\n".join(lines))
    for failure in failures:
        display.text(
            f"{failure.scenario}  {failure.status.upper()}: {failure.error}",
            style="yellow" if failure.status == "unavailable" else "red",
        )
    return 0


def _options(args: argparse.Namespace) -> MeasureOptions:
    options = QUICK if args.quick else FULL
    return MeasureOptions(
        repeat=options.repeat if args.repeat is None else args.repeat,
        min_time_s=options.min_time_s if args.min_time is None else args.min_time,
        budget_s=options.budget_s if args.budget is None else args.budget,
        quick=options.quick,
    )


def _run(discovery: Discovery, args: argparse.Namespace, out: TextIO) -> int:
    old = None
    if args.compare is not None:
        # Read it before measuring: a typo should not cost a whole run.
        try:
            old = Report.load(args.compare)
        except ReportError as exc:
            print(f"flujo-actors-bench: --compare: {exc}", file=sys.stderr)
            return EXIT_USAGE
    selected = _select(discovery, args.scenarios)
    if selected is None:
        return EXIT_USAGE
    found, failed_modules = selected
    options = _options(args)
    isolated = not args.in_process
    cases = [
        (item, size) for item in found for size in item.scenario.sizes_for(quick=options.quick)
    ]
    display = open_display(out, plain=args.plain)
    display.text(
        f"flujo_actors benchmarks: {len(cases)} case(s) from {discovery.directory}"
        f" ({'quick' if options.quick else 'full'}: up to {options.repeat} repeats of >= {options.min_time_s * 1000:g} ms,"
        f" {options.budget_s:g} s budget per workload; {'each case in a fresh process' if isolated else 'in-process'})",
        style="bold",
    )
    load_before = load_average()
    results: list[CaseResult] = []
    interrupted = _measure_all(
        cases, failed_modules, options, isolated, args.timeout, display, results
    )
    report = Report(
        created_at=utc_now(),
        options=RunOptions(
            quick=options.quick,
            repeat=options.repeat,
            min_time_s=options.min_time_s,
            budget_s=options.budget_s,
            isolated=isolated,
            patterns=tuple(args.scenarios),
            scenarios_dir=str(discovery.directory),
        ),
        machine=machine_info(load_before=load_before),
        results=tuple(results),
        scaling=scaling_rows(results),
    )
    failed = _show(report, display, interrupted=interrupted)
    regressed = False
    if args.json is not None:
        report.write(args.json)
        display.text(f"wrote {args.json}" + (" (partial: interrupted)" if interrupted else ""))
    if old is not None:
        changes = compare(old, report, threshold=args.threshold, by=args.compare_by)
        display.table(compare_table(changes, threshold=args.threshold, by=args.compare_by))
        regressions = [c for c in changes if c.verdict == "regression"]
        display.text(
            f"{len(regressions)} regression(s) beyond {args.threshold * 100:g} %",
            style="bold red" if regressions else "green",
        )
        regressed = bool(regressions)
    if args.plot is not None:
        display.text(plot_scaling(report.scaling, args.plot))
    if interrupted:
        return _EXIT_INTERRUPTED
    if regressed and args.fail_on_regression:
        return EXIT_REGRESSION
    if failed and args.strict:
        return EXIT_STRICT
    return 0


def _measure_all(
    cases: Sequence[tuple[Found, int]],
    failed_modules: Sequence[CaseResult],
    options: MeasureOptions,
    isolated: bool,
    timeout_s: float,
    display: Display,
    results: list[CaseResult],
) -> bool:
    """Run the cases in order, appending to ``results``; True if interrupted (Ctrl-C)."""
    display.start(len(cases) + len(failed_modules))
    try:
        for failure in failed_modules:
            results.append(failure)
            display.case_finished(failure)
        for item, size in cases:
            display.case_started(f"{item.scenario.name}[{size:,}]")
            if isolated:
                result = run_isolated(item, size, options, timeout_s=timeout_s)
            else:
                result = run_case(item.scenario, size, options, module=str(item.path))
            results.append(result)
            display.case_finished(result)
    except KeyboardInterrupt:
        return True
    finally:
        display.stop()
    return False


def _show(report: Report, display: Display, *, interrupted: bool) -> bool:
    """Print the machine, results, problems and scaling; True if anything failed."""
    display.text("")
    display.text(report.machine.describe())
    if report.machine.busy:
        display.text(
            f"Warning: the machine was busy when the run started (load {report.machine.load_before:.2f} "
            f"on {report.machine.cpu_count} CPUs): figures are noisy; compare with care.",
            style="bold yellow",
        )
    display.table(
        results_table(
            report.results, title="Results (figure: median of repeats; ratio = figure / raw trio)"
        )
    )
    issues = problems(report.results)
    if issues:
        display.text("\nProblems:", style="bold")
        for line in issues:
            display.text(f"  {line}", style="red")
    if report.scaling:
        display.table(scaling_table(report.scaling))
    ok = sum(r.status == "ok" for r in report.results)
    errors = sum(r.status == "error" for r in report.results)
    unavailable = sum(r.status == "unavailable" for r in report.results)
    judged = [t for r in report.results for t in r.targets if t.passed is not None]
    passed = sum(bool(t.passed) for t in judged)
    summary = (
        f"{len(report.results)} case(s): {ok} ok, {errors} error(s), {unavailable} unavailable; "
        f"targets {passed}/{len(judged)} met" + ("; INTERRUPTED" if interrupted else "")
    )
    failed = bool(errors or unavailable) or passed < len(judged)
    display.text("\n" + summary, style="bold red" if failed else "bold green")
    return failed


def _compare_files(args: argparse.Namespace, out: TextIO) -> int:
    try:
        old = Report.load(args.old)
        new = Report.load(args.new)
    except ReportError as exc:
        print(f"flujo-actors-bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    display = open_display(out, plain=args.plain)
    changes = compare(old, new, threshold=args.threshold, by=args.compare_by)
    display.table(compare_table(changes, threshold=args.threshold, by=args.compare_by))
    regressions = sum(c.verdict == "regression" for c in changes)
    display.text(f"{regressions} regression(s) beyond {args.threshold * 100:g} %")
    return EXIT_REGRESSION if regressions and args.fail_on_regression else 0
