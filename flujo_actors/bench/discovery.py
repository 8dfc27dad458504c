"""Finding scenarios: import ``bench_*.py`` files by path and collect their ``SCENARIOS``.

A module that fails to import becomes a :class:`ModuleFailure` (reported as a row
named ``<group>.*``, where ``bench_<group>.py`` is the file), never a crash of the
run. An ``ImportError`` of a flujo_actors name (not exported yet) makes the row
"unavailable"; any other exception makes it an "error".
"""

from __future__ import annotations

import fnmatch
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from .harness import Scenario, is_unavailable
from .report import CaseResult, Status

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

__all__ = [
    "MODULE_GLOB",
    "Discovery",
    "Found",
    "ModuleFailure",
    "default_scenarios_dir",
    "discover",
    "load_module",
]

MODULE_GLOB: Final = "bench_*.py"


@attrs.frozen(kw_only=True)
class Found:
    """A scenario and the file that declared it (a worker process re-imports that file)."""

    scenario: Scenario
    path: Path


@attrs.frozen(kw_only=True)
class ModuleFailure:
    """A scenario module that could not be loaded."""

    path: Path
    status: Status
    error: str
    detail: str

    @property
    def name(self) -> str:
        """``<group>.*`` for ``bench_<group>.py``: the scenarios it would have declared."""
        return self.path.stem.removeprefix("bench_") + ".*"

    def as_result(self) -> CaseResult:
        """The row shown in the results table."""
        return CaseResult(
            scenario=self.name,
            size=None,
            status=self.status,
            module=str(self.path),
            error=self.error,
            error_detail=self.detail,
        )


@attrs.frozen(kw_only=True)
class Discovery:
    """Everything found in a scenarios directory."""

    directory: Path
    found: tuple[Found, ...]
    failures: tuple[ModuleFailure, ...]

    def select(
        self, patterns: Sequence[str]
    ) -> tuple[tuple[Found, ...], tuple[ModuleFailure, ...], list[str]]:
        """The scenarios and failed modules matching ``patterns`` (names or globs).

        A pattern matches a scenario by ``fnmatch`` on its name, or by group (``parallel``
        selects ``parallel.*``). A failed module is kept when a pattern could have
        matched one of its scenarios. Returns also the patterns that matched nothing.
        """
        if not patterns:
            return self.found, self.failures, []
        unmatched = []
        chosen: dict[str, Found] = {}
        failed: dict[Path, ModuleFailure] = {}
        for pattern in patterns:
            hit = False
            for found in self.found:
                if _matches(pattern, found.scenario.name):
                    chosen.setdefault(found.scenario.name, found)
                    hit = True
            for failure in self.failures:
                group = failure.name.removesuffix(".*")
                if _matches(pattern, failure.name) or pattern.split(".", 1)[0] in (group, "*"):
                    failed.setdefault(failure.path, failure)
                    hit = True
            if not hit:
                unmatched.append(pattern)
        order = {f.scenario.name: i for i, f in enumerate(self.found)}
        return (
            tuple(sorted(chosen.values(), key=lambda f: order[f.scenario.name])),
            tuple(failed.values()),
            unmatched,
        )


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name.split(".", 1)[0] == pattern


def default_scenarios_dir() -> Path:
    """``./benchmarks`` if it holds scenario modules, else the repository's ``benchmarks/``.

    The repository's is the one beside the ``flujo_actors`` package (a source checkout
    or an editable install); when neither exists, ``./benchmarks`` (reported missing).
    """
    here = Path.cwd() / "benchmarks"
    beside_package = Path(__file__).resolve().parents[2] / "benchmarks"
    if any(here.glob(MODULE_GLOB)) or not beside_package.is_dir():
        return here
    return beside_package


def load_module(path: Path) -> ModuleType:
    """Import a scenario file by path under a private module name.

    The module is registered in ``sys.modules`` before it runs, as attrs and
    dataclasses need to resolve the module of the classes it defines.
    """
    name = f"flujo_actors_bench_scenarios.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _scenarios_of(module: ModuleType, path: Path) -> list[Scenario]:
    declared = getattr(module, "SCENARIOS", None)
    if declared is None:
        raise TypeError(f"{path.name} defines no SCENARIOS list")
    if not isinstance(declared, (list, tuple)) or not all(
        isinstance(s, Scenario) for s in declared
    ):
        raise TypeError(
            f"{path.name}: SCENARIOS must be a list of flujo_actors.bench.Scenario, got {declared!r}"
        )
    return list(declared)


def discover(directory: Path) -> Discovery:
    """Load every ``bench_*.py`` in ``directory`` (sorted, not recursive).

    Raises:
        FileNotFoundError: ``directory`` does not exist.
    """
    if not directory.is_dir():
        raise FileNotFoundError(
            f"scenarios directory {directory} does not exist (pass --scenarios-dir DIR)"
        )
    found: list[Found] = []
    failures: list[ModuleFailure] = []
    names: dict[str, Path] = {}
    for path in sorted(directory.glob(MODULE_GLOB)):
        try:
            scenarios = _scenarios_of(load_module(path), path)
        except Exception as exc:
            status: Status = "unavailable" if is_unavailable(exc) else "error"
            where = ""
            frames = traceback.extract_tb(exc.__traceback__)
            if frames:
                where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            failures.append(
                ModuleFailure(
                    path=path,
                    status=status,
                    error=message + where,
                    detail="".join(traceback.format_exception(exc)),
                )
            )
            continue
        for scenario in scenarios:
            if scenario.name in names:
                failures.append(
                    ModuleFailure(
                        path=path,
                        status="error",
                        error=f"scenario {scenario.name!r} is also declared in {names[scenario.name].name}; names must be unique",
                        detail="",
                    )
                )
                continue
            names[scenario.name] = path
            found.append(Found(scenario=scenario, path=path))
    return Discovery(directory=directory, found=tuple(found), failures=tuple(failures))
