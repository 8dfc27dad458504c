"""The benchmark report: result types, the versioned JSON schema, tables, scaling, compare.

(Over 500 lines on purpose: the harness's one report (table, scaling verdicts,
JSON schema, comparison).)

Everything here is plain data and pure functions (no trio, no rich), so the CLI,
the worker processes and the tests share one definition of a result.

JSON schema (``schema_version`` 1), one object::

    {
      "schema": "flujo_actors.bench/report",
      "schema_version": 1,
      "created_at": "2025-01-01T12:00:00+00:00",      # UTC, ISO 8601
      "options": {"quick": bool, "repeat": int, "min_time_s": float, "budget_s": float,
                  "isolated": bool, "patterns": [str], "scenarios_dir": str},
      "machine": {"cpu_count": int|null, "cpu_model": str, "python": str,
                  "implementation": str, "platform": str, "trio": str|null,
                  "attrs": str|null, "cattrs": str|null, "flujo_actors": str|null,
                  "git_commit": str|null, "git_dirty": bool|null,
                  "load_before": float|null, "load_after": float|null},  # 1-min load average
      "results": [                                     # one per (scenario, size)
        {"scenario": str, "size": int|null,            # null: a module that failed to load
         "status": "ok" | "error" | "unavailable",
         "unit": str, "description": str, "module": str,
         "error": str|null, "error_detail": str|null,  # one line / full traceback
         "figure":    STATS|null,                      # the flujo_actors measurement
         "baseline":  STATS|null, "baseline_label": str|null,    # raw trio, same shape
         "reference": STATS|null, "reference_label": str|null,   # another flujo config
         "ratio": float|null,                          # figure.median / baseline.median
         "vs_reference": float|null,                   # figure.median / reference.median
         "higher_is_better": bool,                     # true for rates ("msg/s")
         "peak_rss_mib": float|null,                   # ru_maxrss after the figure
         "rss_delta_mib": float|null,                  # ... minus ru_maxrss before it
         "targets": [{"metric": "figure"|"ratio"|"over_baseline"|"vs_reference"|"peak_rss_mib"|"rss_delta_mib",
                      "label": str, "max": float|null, "min": float|null,
                      "at_size": int|null, "actual": float|null, "passed": bool|null}],
         "wall_s": float, "isolated": bool}
      ],
      "scaling": [{"scenario": str, "unit": str,
                   "points": [{"size": int, "figure": float, "seconds_per_call": float,
                               "baseline_seconds_per_call": float|null}],
                   "growth": [GROWTH],                 # the figure's, between neighbouring sizes
                   "baseline_growth": [GROWTH],        # the raw-trio baseline's, same pairs
                   "verdict": "linear" | "superlinear"}]   # from the worst figure growth

    GROWTH = {"from_size": int, "to_size": int,
              "factor": float,                          # time-per-call growth per 10x input
              "exponent": float}                        # log10(factor): 1.0 linear
    }

    STATS = {"median": float, "min": float, "max": float,   # in the scenario's unit
             "repeats": int, "loops": int, "ops": int,      # repeats x loops calls, ops per call
             "seconds_per_call": float,                     # median wall time of one call
             "samples": [float]}                            # the figure of each repeat

Readers accept unknown keys (newer minor additions); a larger ``schema_version``
is refused with a clear message.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import attrs
import cattrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CaseResult",
    "Change",
    "GrowthStep",
    "MachineInfo",
    "Report",
    "ReportError",
    "RunOptions",
    "ScalingPoint",
    "ScalingRow",
    "Stats",
    "TargetResult",
    "TextTable",
    "compare",
    "compare_table",
    "format_number",
    "problems",
    "results_table",
    "scaling_rows",
    "scaling_table",
    "structure",
    "summarize",
    "unstructure",
    "utc_now",
]

SCHEMA: Final = "flujo_actors.bench/report"
SCHEMA_VERSION: Final = 1

#: Growth exponents above this (per 10x of input) are called superlinear. 1.15 leaves
#: room for timer noise and cache effects while still catching n log n at large n.
SUPERLINEAR_EXPONENT: Final = 1.15

Status = Literal["ok", "error", "unavailable"]
Verdict = Literal["linear", "superlinear"]
ChangeVerdict = Literal["regression", "improvement", "same", "new", "missing", "n/a"]


class ReportError(ValueError):
    """A JSON report cannot be read (missing, not JSON, foreign or too new a schema)."""


@attrs.frozen(kw_only=True)
class Stats:
    """Repeated measurements of one workload, in the scenario's unit."""

    median: float
    min: float
    max: float
    repeats: int
    loops: int
    ops: int
    seconds_per_call: float
    samples: tuple[float, ...] = ()


@attrs.frozen(kw_only=True)
class TargetResult:
    """A scenario target evaluated against one result; ``passed`` is None when unmeasurable."""

    metric: str
    label: str
    max: float | None
    min: float | None
    at_size: int | None
    actual: float | None
    passed: bool | None


@attrs.frozen(kw_only=True)
class CaseResult:
    """The outcome of one scenario at one size (or of a scenario module that failed to load)."""

    scenario: str
    size: int | None
    status: Status
    unit: str = ""
    description: str = ""
    module: str = ""
    error: str | None = None
    error_detail: str | None = None
    figure: Stats | None = None
    baseline: Stats | None = None
    baseline_label: str | None = None
    reference: Stats | None = None
    reference_label: str | None = None
    ratio: float | None = None
    vs_reference: float | None = None
    higher_is_better: bool = False
    peak_rss_mib: float | None = None
    rss_delta_mib: float | None = None
    targets: tuple[TargetResult, ...] = ()
    wall_s: float = 0.0
    isolated: bool = False

    @property
    def label(self) -> str:
        """``name[size]``, the row label used in tables and progress lines."""
        return self.scenario if self.size is None else f"{self.scenario}[{self.size:,}]"

    @property
    def failed_targets(self) -> tuple[TargetResult, ...]:
        """The targets evaluated and missed."""
        return tuple(t for t in self.targets if t.passed is False)


@attrs.frozen(kw_only=True)
class MachineInfo:
    """Where the report was measured."""

    cpu_count: int | None
    cpu_model: str
    python: str
    implementation: str
    platform: str
    trio: str | None
    attrs: str | None
    cattrs: str | None
    flujo_actors: str | None
    git_commit: str | None
    git_dirty: bool | None
    load_before: float | None = None
    load_after: float | None = None

    @property
    def busy(self) -> bool:
        """True when other work was competing for the CPUs as the run started.

        The harness runs one case at a time (one busy core); a 1-minute load average
        above ``cpu_count - 0.5`` before it started means it shared a core.
        """
        if self.load_before is None or not self.cpu_count:
            return False
        return self.load_before > self.cpu_count - 0.5

    def describe(self) -> str:
        """One paragraph for the top of a report."""
        commit = "no git"
        if self.git_commit:
            commit = self.git_commit[:10] + (" (uncommitted changes)" if self.git_dirty else "")
        text = (
            f"{self.cpu_count or '?'} CPU(s), {self.cpu_model}; {self.implementation} "
            f"{self.python} on {self.platform}\n"
            f"trio {self.trio or '-'}, attrs {self.attrs or '-'}, cattrs {self.cattrs or '-'}; "
            f"flujo_actors {self.flujo_actors or '-'} @ {commit}"
        )
        if self.load_before is not None:
            after = "" if self.load_after is None else f", {self.load_after:.2f} after"
            text += f"\nload average (1 min): {self.load_before:.2f} before the run{after}"
        return text


@attrs.frozen(kw_only=True)
class RunOptions:
    """How the run was made (so two reports can be judged comparable)."""

    quick: bool
    repeat: int
    min_time_s: float
    budget_s: float
    isolated: bool
    patterns: tuple[str, ...] = ()
    scenarios_dir: str = ""


@attrs.frozen(kw_only=True)
class ScalingPoint:
    """One size of a multi-size scenario."""

    size: int
    figure: float
    seconds_per_call: float
    baseline_seconds_per_call: float | None = None


@attrs.frozen(kw_only=True)
class GrowthStep:
    """Growth of the time per call between two sizes, normalised to a 10x larger input.

    ``factor`` 10 is linear; ``exponent`` is ``log10(factor)`` (1.0 linear, 2.0 quadratic).
    """

    from_size: int
    to_size: int
    factor: float
    exponent: float


@attrs.frozen(kw_only=True)
class ScalingRow:
    """The scaling verdict of one scenario declared with several sizes."""

    scenario: str
    unit: str
    points: tuple[ScalingPoint, ...]
    growth: tuple[GrowthStep, ...]
    verdict: Verdict
    baseline_growth: tuple[GrowthStep, ...] = ()


def utc_now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


_converter = cattrs.Converter(forbid_extra_keys=False)
_T = TypeVar("_T")


def unstructure(obj: object) -> object:
    """An attrs value of this package as JSON-compatible data (the report's converter)."""
    return _converter.unstructure(obj)


def structure(data: object, cls: type[_T]) -> _T:
    """Rebuild an attrs value of this package from :func:`unstructure` output."""
    return _converter.structure(data, cls)


@attrs.frozen(kw_only=True)
class Report:
    """A whole benchmark run; ``to_json``/``from_json`` follow the module's schema."""

    created_at: str
    options: RunOptions
    machine: MachineInfo
    results: tuple[CaseResult, ...]
    scaling: tuple[ScalingRow, ...] = ()
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """The report as indented JSON text."""
        data = _converter.unstructure(self)
        # Key order for humans reading the file: identity first, results last.
        head = {k: data.pop(k) for k in ("schema", "schema_version", "created_at")}
        return json.dumps({**head, **data}, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "report") -> Report:
        """Parse a report, checking ``schema`` and ``schema_version``.

        Raises:
            ReportError: not JSON, not a flujo_actors bench report, or a newer schema.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{source} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ReportError(
                f"{source} is not a flujo_actors benchmark report "
                f'(expected "schema": {SCHEMA!r}); write one with `run --json PATH`.'
            )
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise ReportError(
                f"{source} has schema_version {version!r}; this harness reads 1 to "
                f"{SCHEMA_VERSION}. Re-run the benchmarks with this version to compare."
            )
        try:
            return _converter.structure(data, cls)
        except Exception as exc:  # cattrs raises ClassValidationError groups
            detail = (
                "; ".join(cattrs.transform_error(exc))
                if isinstance(exc, cattrs.BaseValidationError)
                else str(exc)
            )
            raise ReportError(f"{source} does not match the report schema: {detail}") from None

    def write(self, path: Path) -> None:
        """Write the JSON report, creating parent directories."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Report:
        """Read a JSON report from ``path``.

        Raises:
            ReportError: the file is missing or not a readable report.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls.from_json(text, source=str(path))


# --------------------------------------------------------------------------- scaling


def scaling_rows(results: Iterable[CaseResult]) -> tuple[ScalingRow, ...]:
    """The scaling verdict of every scenario measured at two sizes or more.

    The time of one workload call at each size is compared between neighbouring sizes
    and normalised to a 10x larger input. This assumes a call at size ``n`` does ``n``
    units of work (true of every bundled scenario).
    """
    by_name: dict[str, list[CaseResult]] = {}
    for result in results:
        if result.status == "ok" and result.figure is not None and result.size:
            by_name.setdefault(result.scenario, []).append(result)
    rows = []
    for name, cases in by_name.items():
        cases.sort(key=lambda r: r.size or 0)
        if len(cases) < 2:
            continue
        points = tuple(
            ScalingPoint(
                size=c.size or 0,
                figure=c.figure.median,
                seconds_per_call=c.figure.seconds_per_call,
                baseline_seconds_per_call=c.baseline.seconds_per_call if c.baseline else None,
            )
            for c in cases
            if c.figure is not None
        )
        pairs = [(a, b) for a, b in itertools.pairwise(points) if b.size > a.size]
        if not pairs:
            continue
        growth = tuple(
            _growth(a.size, a.seconds_per_call, b.size, b.seconds_per_call) for a, b in pairs
        )
        baseline_growth = tuple(
            _growth(a.size, a.baseline_seconds_per_call, b.size, b.baseline_seconds_per_call)
            for a, b in pairs
            if a.baseline_seconds_per_call and b.baseline_seconds_per_call
        )
        worst = max(g.exponent for g in growth)
        verdict: Verdict = "superlinear" if worst > SUPERLINEAR_EXPONENT else "linear"
        rows.append(
            ScalingRow(
                scenario=name,
                unit=cases[0].unit,
                points=points,
                growth=growth,
                baseline_growth=baseline_growth,
                verdict=verdict,
            )
        )
    return tuple(rows)


def _growth(small: int, small_time: float, large: int, large_time: float) -> GrowthStep:
    exponent = math.log10(large_time / small_time) / math.log10(large / small)
    return GrowthStep(from_size=small, to_size=large, factor=10**exponent, exponent=exponent)


# --------------------------------------------------------------------------- compare


@attrs.frozen(kw_only=True)
class Change:
    """One row of a comparison between an old and a new report.

    ``change`` is the signed relative change of the compared value ((new - old) / old);
    ``verdict`` already accounts for the direction (a falling rate is a regression).
    """

    label: str
    unit: str
    old: float | None
    new: float | None
    change: float | None
    verdict: ChangeVerdict


def compare(
    old: Report,
    new: Report,
    *,
    threshold: float = 0.10,
    by: Literal["figure", "ratio"] = "figure",
) -> tuple[Change, ...]:
    """Compare two reports case by case (matched on scenario name and size).

    Args:
        old: the reference report.
        new: the report being judged.
        threshold: relative change (0.10 = 10 %) beyond which a worse value is a
            regression and a better one an improvement.
        by: ``"figure"`` compares the measured figures (same machine), ``"ratio"``
            the figure/baseline ratios (more stable across machines).
    """
    old_cases = {(r.scenario, r.size): r for r in old.results}
    seen: set[tuple[str, int | None]] = set()
    changes = []
    for case in new.results:
        key = (case.scenario, case.size)
        seen.add(key)
        before = old_cases.get(key)
        new_value = _compared_value(case, by)
        if before is None:
            changes.append(_change(case, None, new_value, "new"))
            continue
        old_value = _compared_value(before, by)
        if new_value is None or old_value is None or old_value == 0:
            changes.append(_change(case, old_value, new_value, "n/a"))
            continue
        delta = (new_value - old_value) / old_value
        worse = -delta if case.higher_is_better else delta
        verdict: ChangeVerdict = "same"
        if worse > threshold:
            verdict = "regression"
        elif worse < -threshold:
            verdict = "improvement"
        changes.append(_change(case, old_value, new_value, verdict, delta))
    for key, case in old_cases.items():
        if key not in seen:
            changes.append(_change(case, _compared_value(case, by), None, "missing"))
    return tuple(changes)


def _change(
    case: CaseResult,
    old: float | None,
    new: float | None,
    verdict: ChangeVerdict,
    change: float | None = None,
) -> Change:
    return Change(
        label=case.label, unit=case.unit, old=old, new=new, change=change, verdict=verdict
    )


def _compared_value(case: CaseResult, by: str) -> float | None:
    if case.status != "ok":
        return None
    if by == "ratio":
        return case.ratio
    return case.figure.median if case.figure is not None else None


# --------------------------------------------------------------------------- text


@attrs.frozen(kw_only=True)
class TextTable:
    """A table as strings, rendered by the plain or the rich display.

    ``styles`` holds one rich style name per row ("" for none); plain output ignores it.
    ``align`` has one of "l"/"r" per column.
    """

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str
    styles: tuple[str, ...] = ()

    def render_plain(self) -> str:
        """Fixed-width text, columns separated by two spaces."""
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                cell.ljust(w) if a == "l" else cell.rjust(w)
                for cell, w, a in zip(cells, widths, self.align, strict=True)
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        out = [self.title, line(self.headers), rule, *(line(r) for r in self.rows)]
        return "\n".join(out)


def format_number(value: float | None) -> str:
    """A figure with about three significant digits and thousands separators."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}" if value < 100 else f"x{value:,.0f}"


def _targets_cell(result: CaseResult) -> str:
    cells = []
    for target in result.targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[target.passed]
        cells.append(f"{verdict} {target.label}")
    return "; ".join(cells) or "-"


def summarize(result: CaseResult) -> str:
    """One line describing a finished case (the progress log and plain output)."""
    if result.status != "ok" or result.figure is None:
        return f"{result.label}: {result.status.upper()}: {result.error or 'no figure'}"
    fig = result.figure
    parts = [
        f"{result.label}: {format_number(fig.median)} {result.unit}"
        f" (min {format_number(fig.min)}, max {format_number(fig.max)}, {fig.repeats}x{fig.loops})"
    ]
    if result.baseline is not None:
        parts.append(f"raw trio {format_number(result.baseline.median)} -> {_ratio(result.ratio)}")
    if result.reference is not None:
        parts.append(
            f"{result.reference_label or 'reference'} {format_number(result.reference.median)} -> {_ratio(result.vs_reference)}"
        )
    if result.peak_rss_mib is not None:
        parts.append(f"RSS {format_number(result.peak_rss_mib)} MiB")
    if result.targets:
        parts.append(_targets_cell(result))
    if result.error:
        parts.append(f"ERROR: {result.error}")
    return "; ".join(parts)


def results_table(results: Sequence[CaseResult], title: str = "Results") -> TextTable:
    """The main table: one row per case; a "vs ref" column only when some case has one."""
    with_ref = any(r.reference is not None for r in results)
    headers = ["scenario", "size", "median", "min-max", "unit", "n", "raw trio", "ratio"]
    align = "lrrrlrrr"
    if with_ref:
        headers += ["vs ref"]
        align += "r"
    headers += ["RSS MiB (+delta)", "target"]
    align += "rl"
    rows = []
    styles = []
    for r in results:
        size = "" if r.size is None else f"{r.size:,}"
        if r.figure is None:
            row = [r.scenario, size, r.status.upper(), "", r.unit, "", "", ""]
            row += [""] * (3 if with_ref else 2)
            styles.append("yellow" if r.status == "unavailable" else "red")
        else:
            fig = r.figure
            row = [
                r.scenario,
                size,
                format_number(fig.median),
                f"{format_number(fig.min)}-{format_number(fig.max)}",
                r.unit,
                f"{fig.repeats}x{fig.loops}",
                format_number(r.baseline.median) if r.baseline else "-",
                _ratio(r.ratio),
            ]
            if with_ref:
                row.append(_ratio(r.vs_reference))
            rss = format_number(r.peak_rss_mib)
            if r.rss_delta_mib is not None:
                rss += f" (+{format_number(r.rss_delta_mib)})"
            row += [rss, _targets_cell(r)]
            styles.append("red" if r.failed_targets or r.status != "ok" else "")
        rows.append(tuple(row))
    return TextTable(
        title=title, headers=tuple(headers), rows=tuple(rows), align=align, styles=tuple(styles)
    )


def problems(results: Sequence[CaseResult]) -> list[str]:
    """One line per case that errored, is unavailable or had a baseline/reference fail."""
    return [f"{r.label}: {r.status}: {r.error}" for r in results if r.error]


def scaling_table(rows: Sequence[ScalingRow]) -> TextTable:
    """Per scenario: the figure at each size, the growth per 10x of input, a verdict."""
    body = []
    styles = []
    for row in rows:
        figures = ", ".join(f"{p.size:,}: {format_number(p.figure)}" for p in row.points)
        growth = ", ".join(f"x{format_number(g.factor)}" for g in row.growth)
        baseline = ", ".join(f"x{format_number(g.factor)}" for g in row.baseline_growth) or "-"
        exponent = max(g.exponent for g in row.growth)
        body.append(
            (row.scenario, row.unit, figures, growth, baseline, f"{row.verdict} (n^{exponent:.2f})")
        )
        styles.append("red" if row.verdict == "superlinear" else "green")
    return TextTable(
        title="Scaling (time per call vs input size; x10 per 10x is linear)",
        headers=(
            "scenario",
            "unit",
            "figure by size",
            "growth per 10x",
            "raw trio growth",
            "verdict",
        ),
        rows=tuple(body),
        align="llllll",
        styles=tuple(styles),
    )


def compare_table(changes: Sequence[Change], *, threshold: float, by: str) -> TextTable:
    """The comparison table printed by ``--compare``."""
    rows = []
    styles = []
    for c in changes:
        change = "-" if c.change is None else f"{c.change * 100:+.1f} %"
        verdict = c.verdict.upper() if c.verdict == "regression" else c.verdict
        rows.append((c.label, c.unit, format_number(c.old), format_number(c.new), change, verdict))
        styles.append({"regression": "bold red", "improvement": "green"}.get(c.verdict, ""))
    what = "figure" if by == "figure" else "ratio to raw trio"
    return TextTable(
        title=f"Compared with the old report ({what}; threshold {threshold * 100:g} %)",
        headers=("scenario", "unit", "old", "new", "change", "verdict"),
        rows=tuple(rows),
        align="llrrrl",
        styles=tuple(styles),
    )
