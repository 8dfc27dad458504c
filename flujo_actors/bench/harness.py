"""The scenario model and the measuring loop.

(Over 500 lines on purpose: the case runner and its fresh-process protocol,
read as one unit.)

A scenario module (``benchmarks/bench_*.py``) exposes ``SCENARIOS``, a list of
:class:`Scenario`. A scenario names three *workload factories*: ``measure`` (the
flujo_actors code under test), ``baseline`` (the closest raw-trio program of the same
shape) and optionally ``reference`` (another flujo_actors configuration to show
beside it, e.g. "without a usage limit"). A factory takes the input size and returns a
:class:`Workload` (directly, from a coroutine, or from an async context manager when
it needs setup and teardown such as a running supervisor or a temporary file).

Measuring one workload (:func:`measure`), inside a fresh ``trio.run`` on the real
clock: build it (untimed), one warm-up call that also calibrates how many calls make
one repeat last at least ``min_time_s`` (like ``timeit``), then up to ``repeat`` timed
repeats, stopping early once ``budget_s`` is spent (at least one repeat always runs).
Each repeat yields one figure in the scenario's unit; the report keeps median, min,
max and the samples.
"""

from __future__ import annotations

import gc
import inspect
import math
import re
import statistics
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Final, Literal, TypeAlias

import attrs
import trio

from .report import CaseResult, Stats, Status, TargetResult

__all__ = [
    "FULL",
    "QUICK",
    "BenchError",
    "MeasureOptions",
    "Metric",
    "Prepare",
    "Scenario",
    "Target",
    "Unavailable",
    "Unit",
    "Workload",
    "expect",
    "is_unavailable",
    "measure",
    "peak_rss_mib",
    "run_case",
]


class BenchError(Exception):
    """A workload produced a wrong result (so its timing would be meaningless)."""


class Unavailable(Exception):
    """Raise from a workload factory when the code it measures does not exist yet."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`BenchError` with ``message`` unless ``condition`` holds.

    Scenarios check each call's result so a fast failure is never reported as a
    fast success.
    """
    if not condition:
        raise BenchError(message)


# --------------------------------------------------------------------------- units

_TIME_SCALE: Final = {"ns": 1e9, "us": 1e6, "ms": 1e3, "s": 1.0}
_UNIT_RE: Final = re.compile(r"^(?P<head>[A-Za-z_]+)(?:/(?P<tail>[A-Za-z_]+))?$")


@attrs.frozen
class Unit:
    """How a scenario's unit turns (seconds per call, ops per call) into its figure.

    Three forms: ``"us/step"`` (time per op; also ns, ms, s), ``"ms"`` (time per call)
    and ``"msg/s"`` (ops per second; any word before ``/s``).
    """

    text: str
    kind: Literal["per_op", "per_call", "rate"]
    scale: float

    @classmethod
    def parse(cls, text: str) -> Unit:
        """Parse a unit string.

        Raises:
            ValueError: the text is none of the three forms.
        """
        match = _UNIT_RE.match(text)
        if match:
            head, tail = match["head"], match["tail"]
            if tail is None and head in _TIME_SCALE:
                return cls(text, "per_call", _TIME_SCALE[head])
            if tail is not None and head in _TIME_SCALE and tail != "s":
                return cls(text, "per_op", _TIME_SCALE[head])
            if tail == "s" and head not in _TIME_SCALE:
                return cls(text, "rate", 1.0)
        raise ValueError(
            f"unit {text!r} is not understood: use a time per op such as 'us/step', "
            "a time per call such as 'ms', or a rate such as 'msg/s'."
        )

    @property
    def higher_is_better(self) -> bool:
        """True for rates."""
        return self.kind == "rate"

    def figure(self, seconds_per_call: float, ops: int) -> float:
        """The figure for one call that took ``seconds_per_call`` and did ``ops`` ops."""
        if self.kind == "per_call":
            return seconds_per_call * self.scale
        if self.kind == "per_op":
            return seconds_per_call / ops * self.scale
        return ops / seconds_per_call


# --------------------------------------------------------------------------- targets

Metric: TypeAlias = Literal[
    "figure", "ratio", "over_baseline", "vs_reference", "peak_rss_mib", "rss_delta_mib"
]
_METRIC_LABEL: Final = {
    "figure": "",
    "ratio": "ratio ",
    "over_baseline": "over raw trio ",
    "vs_reference": "vs ref ",
    "peak_rss_mib": "RSS ",
    "rss_delta_mib": "RSS growth ",
}


@attrs.frozen(kw_only=True)
class Target:
    """A goal for one metric of a scenario, optionally only at one size.

    Args:
        max: the metric must be <= this.
        min: the metric must be >= this.
        metric: ``"figure"`` (in the scenario's unit), ``"ratio"`` (figure / raw-trio
            baseline), ``"over_baseline"`` (figure - raw-trio baseline, in the unit),
            ``"vs_reference"`` (figure / reference), ``"peak_rss_mib"`` or
            ``"rss_delta_mib"`` (peak RSS growth over the process before the case).
        at_size: only judge the case of this size (None: every size).
    """

    max: float | None = None
    min: float | None = None
    metric: Metric = "figure"
    at_size: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.max is None and self.min is None:
            raise ValueError("Target needs max=... and/or min=...; Target() checks nothing.")

    def label(self, unit: str) -> str:
        """E.g. ``"<= 25 us/step"``, ``"RSS <= 2,048 MiB"``, ``"vs ref <= 2"``."""
        suffix = {
            "figure": f" {unit}",
            "over_baseline": f" {unit}",
            "peak_rss_mib": " MiB",
            "rss_delta_mib": " MiB",
        }.get(self.metric, "")
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:,g}{suffix}")
        if self.max is not None:
            bounds.append(f"<= {self.max:,g}{suffix}")
        return _METRIC_LABEL[self.metric] + " and ".join(bounds)

    def evaluate(self, value: float | None, unit: str) -> TargetResult:
        """Judge ``value``; ``passed`` is None when the value could not be measured."""
        passed: bool | None = None
        if value is not None:
            passed = (self.max is None or value <= self.max) and (
                self.min is None or value >= self.min
            )
        return TargetResult(
            metric=self.metric,
            label=self.label(unit),
            max=self.max,
            min=self.min,
            at_size=self.at_size,
            actual=value,
            passed=passed,
        )


# --------------------------------------------------------------------------- workloads


@attrs.frozen
class Workload:
    """One timed operation: ``run`` is awaited ``loops`` times per repeat.

    Args:
        run: the operation. Returns None to be timed by the harness, or a float of
            seconds it measured itself (e.g. a figure read from a subprocess).
        ops: units of work one call does (steps, messages, restarts); per-op units
            and rates divide by it.
    """

    run: Callable[[], Awaitable[float | None]]
    ops: int = 1


Prepare: TypeAlias = Callable[
    [int], "Workload | Awaitable[Workload] | AbstractAsyncContextManager[Workload]"
]
"""A workload factory: size -> Workload, a coroutine of one, or an async context manager."""

_NAME_RE: Final = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


def _check_name(_instance: object, _attribute: object, value: str) -> None:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"Scenario name {value!r} must be dotted lowercase words such as 'sequential.trivial' "
            "(the first word groups related scenarios)."
        )


def _check_unit(_instance: object, _attribute: object, value: str) -> None:
    Unit.parse(value)


def _check_sizes(
    _instance: object, attribute: attrs.Attribute[tuple[int, ...]], value: tuple[int, ...]
) -> None:
    if (
        not isinstance(value, tuple)
        or not value
        or not all(isinstance(n, int) and n > 0 for n in value)
    ):
        raise ValueError(
            f"Scenario {attribute.name} must be a non-empty tuple of positive ints, got {value!r}."
        )


def _check_quick_sizes(
    instance: object,
    attribute: attrs.Attribute[tuple[int, ...] | None],
    value: tuple[int, ...] | None,
) -> None:
    if value is not None:
        _check_sizes(instance, attribute, value)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class Scenario:
    """A benchmark scenario, declared in a ``benchmarks/bench_*.py`` module's ``SCENARIOS``.

    Args:
        name: dotted lowercase name, e.g. ``"parallel.context_update"``.
        measure: workload factory for the flujo_actors code under test.
        unit: ``"us/step"``, ``"ms"``, ``"msg/s"``, ... (see :class:`Unit`).
        description: what one call does, shown by ``list``.
        baseline: workload factory for the raw-trio program of the same shape.
        baseline_label: what that baseline is, in a few words (shown by ``list``).
        reference: optional second flujo_actors configuration to compare against.
        reference_label: what the reference is ("no usage limit").
        sizes: input sizes of a full run.
        quick_sizes: input sizes for ``--quick`` (default: ``sizes``).
        targets: goals judged in the table.
        warmup: False skips the warm-up/calibration call (for workloads so heavy that
            one call is a whole repeat); each repeat is then a single call.
    """

    name: str = attrs.field(validator=_check_name)
    measure: Prepare
    unit: str = attrs.field(validator=_check_unit)
    description: str = ""
    baseline: Prepare | None = None
    baseline_label: str = ""
    reference: Prepare | None = None
    reference_label: str = ""
    sizes: tuple[int, ...] = attrs.field(default=(1,), validator=_check_sizes)
    quick_sizes: tuple[int, ...] | None = attrs.field(default=None, validator=_check_quick_sizes)
    targets: tuple[Target, ...] = ()
    warmup: bool = True

    @property
    def group(self) -> str:
        """The first word of the name."""
        return self.name.split(".", 1)[0]

    def sizes_for(self, *, quick: bool) -> tuple[int, ...]:
        """The sizes of a full or a quick run."""
        return self.quick_sizes if quick and self.quick_sizes is not None else self.sizes


# --------------------------------------------------------------------------- measuring


@attrs.frozen(kw_only=True)
class MeasureOptions:
    """How hard to measure.

    Args:
        repeat: at most this many timed repeats per workload.
        min_time_s: calls are batched so one repeat lasts at least this long.
        budget_s: stop repeating once this much time went into one workload.
        quick: use each scenario's ``quick_sizes``.
    """

    repeat: int = 5
    min_time_s: float = 0.1
    budget_s: float = 20.0
    quick: bool = False


QUICK: Final = MeasureOptions(repeat=3, min_time_s=0.02, budget_s=4.0, quick=True)
FULL: Final = MeasureOptions(repeat=7, min_time_s=0.1, budget_s=20.0, quick=False)

#: A repeat never batches more calls than this (keeps a mis-sized workload bounded).
_MAX_LOOPS: Final = 100_000


@asynccontextmanager
async def _open(prepare: Prepare, size: int) -> AsyncIterator[Workload]:
    made = prepare(size)
    if isinstance(made, Workload):
        yield made
    elif isinstance(made, AbstractAsyncContextManager):
        async with made as workload:
            yield _checked(workload)
    elif inspect.isawaitable(made):
        yield _checked(await made)
    else:
        raise TypeError(
            f"workload factory returned {made!r}; expected a Workload (or an awaitable or async context manager of one)"
        )


def _checked(workload: object) -> Workload:
    if not isinstance(workload, Workload):
        raise TypeError(f"workload factory produced {workload!r}; expected a Workload")
    return workload


async def _time_calls(workload: Workload, loops: int) -> float:
    self_timed = 0.0
    reported = False
    start = time.perf_counter()
    for _ in range(loops):
        seconds = await workload.run()
        if seconds is not None:
            reported = True
            self_timed += seconds
    elapsed = time.perf_counter() - start
    return self_timed if reported else elapsed


async def measure(
    prepare: Prepare, size: int, unit: Unit, options: MeasureOptions, warmup: bool = True
) -> Stats:
    """Measure one workload (call inside trio); see the module docstring for the method.

    Raises:
        BenchError: the workload took no measurable time, or its own checks failed.
    """
    async with _open(prepare, size) as workload:
        if workload.ops < 1:
            raise BenchError(f"Workload.ops must be >= 1, got {workload.ops!r}")
        # Collected once up front, not between repeats: a runtime's own garbage is
        # part of its cost.
        gc.collect()
        started = time.perf_counter()
        loops = 1
        if warmup:
            first = await _time_calls(workload, 1)
            loops = _MAX_LOOPS
            if first > 0:
                # The epsilon keeps float noise (0.001 / 1e-6 = 1000.0000000000001)
                # from adding a call.
                loops = max(1, min(_MAX_LOOPS, math.ceil(options.min_time_s / first - 1e-9)))
        per_call: list[float] = []
        for _ in range(max(1, options.repeat)):
            per_call.append(await _time_calls(workload, loops) / loops)
            if time.perf_counter() - started >= options.budget_s:
                break
    if min(per_call) <= 0:
        raise BenchError("the workload took no measurable time")
    figures = [unit.figure(seconds, workload.ops) for seconds in per_call]
    return Stats(
        median=statistics.median(figures),
        min=min(figures),
        max=max(figures),
        repeats=len(figures),
        loops=loops,
        ops=workload.ops,
        seconds_per_call=statistics.median(per_call),
        samples=tuple(figures),
    )


def peak_rss_mib() -> float | None:
    """The process's peak resident set size so far (``ru_maxrss``), in MiB; None if unknown."""
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes, Linux and the BSDs KiB.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _unwrap(exc: BaseException) -> BaseException:
    # trio wraps task errors in (possibly nested) single-member groups.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the measured code does not exist (yet), rather than broke.

    That is :class:`Unavailable`, ``NotImplementedError``, or an ``ImportError`` of a
    flujo_actors name; any other missing import is an error of the scenario.
    """
    if isinstance(exc, (Unavailable, NotImplementedError)):
        return True
    return isinstance(exc, ImportError) and (exc.name or "").split(".", 1)[0] == "flujo_actors"


def _classify(exc: BaseException) -> tuple[Status, str, str]:
    inner = _unwrap(exc)
    status: Status = "unavailable" if is_unavailable(inner) else "error"
    where = ""
    frames = traceback.extract_tb(inner.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {Path(last.filename).name}:{last.lineno})"
    message = (
        f"{type(inner).__name__}: {inner}".strip().splitlines()[0]
        if str(inner)
        else type(inner).__name__
    )
    detail = "".join(traceback.format_exception(exc))
    return status, message + where, detail


def run_case(
    scenario: Scenario,
    size: int,
    options: MeasureOptions,
    *,
    module: str = "",
    isolated: bool = False,
) -> CaseResult:
    """Measure one scenario at one size: figure, then reference, then baseline.

    The figure goes first so peak RSS after it belongs to flujo_actors, not to the
    baseline. Each measurement is its own ``trio.run``. Errors become the result's
    ``status``/``error`` (a failing baseline keeps the figure); KeyboardInterrupt
    propagates.
    """
    unit = Unit.parse(scenario.unit)
    started = time.perf_counter()
    rss_before = peak_rss_mib()
    status: Status = "ok"
    errors: list[str] = []
    details: list[str] = []
    stats: dict[str, Stats | None] = {"figure": None, "reference": None, "baseline": None}
    rss_after: float | None = None
    for role, prepare in (
        ("figure", scenario.measure),
        ("reference", scenario.reference),
        ("baseline", scenario.baseline),
    ):
        if prepare is None:
            continue
        try:
            stats[role] = trio.run(measure, prepare, size, unit, options, scenario.warmup)
        except Exception as exc:
            kind, message, detail = _classify(exc)
            errors.append(message if role == "figure" else f"{role} failed: {message}")
            details.append(detail)
            if status == "ok" or kind == "error":
                status = kind
            if role == "figure":
                break  # nothing to compare the baseline with
        finally:
            if role == "figure":
                rss_after = peak_rss_mib()
    figure, baseline, reference = stats["figure"], stats["baseline"], stats["reference"]
    ratio = figure.median / baseline.median if figure and baseline else None
    vs_reference = figure.median / reference.median if figure and reference else None
    delta = (
        rss_after - rss_before
        if rss_after is not None and rss_before is not None and figure
        else None
    )
    values = {
        "figure": figure.median if figure else None,
        "ratio": ratio,
        "over_baseline": figure.median - baseline.median if figure and baseline else None,
        "vs_reference": vs_reference,
        "peak_rss_mib": rss_after if figure else None,
        "rss_delta_mib": delta,
    }
    targets = tuple(
        t.evaluate(values[t.metric], scenario.unit)
        for t in scenario.targets
        if t.at_size in (None, size)
    )
    return CaseResult(
        scenario=scenario.name,
        size=size,
        status=status,
        unit=scenario.unit,
        description=scenario.description,
        module=module,
        error="; ".join(errors) or None,
        error_detail="\n".join(details) or None,
        figure=figure,
        baseline=baseline,
        baseline_label=scenario.baseline_label or None,
        reference=reference,
        reference_label=scenario.reference_label or None,
        ratio=ratio,
        vs_reference=vs_reference,
        higher_is_better=unit.higher_is_better,
        peak_rss_mib=rss_after if figure else None,
        rss_delta_mib=delta,
        targets=targets,
        wall_s=time.perf_counter() - started,
        isolated=isolated,
    )
