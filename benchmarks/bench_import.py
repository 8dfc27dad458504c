"""Import time of ``flujo_actors`` in a fresh interpreter.

Measured with ``python -X importtime -c "import flujo_actors"``: the figure is the
cumulative time of the ``flujo_actors`` line, i.e. the import work itself (trio, attrs,
cattrs and our modules), without interpreter start-up. ``-X importtime`` adds a small
overhead of its own. The baseline is ``import trio`` measured the same way.

Both are measured with bytecode cached, as DESIGN.md's budget says: trio's was written
when pip installed it, and ours is written (``compileall``) before the first measurement,
since an editable install under ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every
module from source on each import (about 25 ms on the dev box) while trio's is cached.
"""

from __future__ import annotations

import compileall
import functools
import os
import sys
from pathlib import Path

import trio

import flujo_actors
from flujo_actors.bench import BenchError, Scenario, Target, Workload

__all__ = ["SCENARIOS", "import_seconds"]

#: The directory holding the flujo_actors package, for the child's PYTHONPATH.
_PACKAGE_ROOT = str(Path(flujo_actors.__file__ or ".").resolve().parents[1])


@functools.cache
def _cache_bytecode() -> None:
    """Write the package's bytecode (once per process); raise if it cannot be written."""
    package = Path(flujo_actors.__file__ or ".").resolve().parent
    if not compileall.compile_dir(package, quiet=2, workers=1):
        raise BenchError(f"cannot write the bytecode of {package} (compileall failed)")


async def import_seconds(module: str, then: str = "") -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, in seconds.

    With ``then`` (names, e.g. ``"Flujo, Step"``), the import is
    ``from module import <then>`` and the figure is the sum of the top-level
    lines: the module and every module its names load on first use.
    """
    _cache_bytecode()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    done = await trio.run_process(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            f"from {module} import {then}" if then else f"import {module}",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise BenchError(f"import {module} failed: {stderr.strip().splitlines()[-1:]}")
    # Lines look like "import time:   self [us] | cumulative | imported package";
    # a top-level import has no indent before its name.
    total, seen = 0, False
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or "cumulative" in parts[1]:
            continue
        name = parts[2].rstrip()
        top_level = len(name) - len(name.lstrip()) <= 1  # one space after the "|"
        if name.strip() == module:
            seen = True
            if not then:
                return int(parts[1]) / 1e6
        if then and seen and top_level:
            total += int(parts[1])
    if seen and then:
        return total / 1e6
    raise BenchError(f"no -X importtime line for {module!r}")


def _importing(module: str) -> Workload:
    async def once() -> float:
        return await import_seconds(module)

    return Workload(once)


def flujo_actors_import(_size: int) -> Workload:
    """``import flujo_actors``."""
    return _importing("flujo_actors")


def core_import(_size: int) -> Workload:
    """``from flujo_actors import Flujo, Step, Pipeline`` (the pipeline core)."""

    async def once() -> float:
        return await import_seconds("flujo_actors", then="Flujo, Step, Pipeline")

    return Workload(once)


def trio_import(_size: int) -> Workload:
    """``import trio``."""
    return _importing("trio")


SCENARIOS = [
    Scenario(
        name="import.flujo_actors",
        description="Cumulative `import flujo_actors` time from python -X importtime in a fresh interpreter (start-up excluded).",
        measure=flujo_actors_import,
        baseline=trio_import,
        baseline_label="`import trio` measured the same way (a dependency, so the ratio is >= 1)",
        unit="ms",
        # DESIGN.md: `import flujo_actors` <= `import trio` + 40 ms, both measured in this run.
        targets=(Target(max=40.0, metric="over_baseline"),),
    ),
    Scenario(
        name="import.flujo_actors_core",
        description="`from flujo_actors import Flujo, Step, Pipeline` (the pipeline core) from python -X importtime in a fresh interpreter.",
        measure=core_import,
        baseline=trio_import,
        baseline_label="`import trio` measured the same way",
        unit="ms",
        targets=(Target(max=40.0, metric="over_baseline"),),
    ),
]
