"""Import time of ``flujo_actors`` in a fresh interpreter.

Measured with ``python -X importtime -c "import flujo_actors"``: the figure is the
cumulative time of the ``flujo_actors`` line, i.e. the import work itself (trio, attrs,
cattrs and our modules), without interpreter start-up. ``-X importtime`` adds a small
overhead of its own. The baseline is ``import trio`` measured the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

import flujo_actors
from flujo_actors.bench import BenchError, Scenario, Target, Workload

__all__ = ["SCENARIOS", "import_seconds"]

#: The directory holding the flujo_actors package, for the child's PYTHONPATH.
_PACKAGE_ROOT = str(Path(flujo_actors.__file__ or ".").resolve().parents[1])


async def import_seconds(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, in seconds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    done = await trio.run_process(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise BenchError(f"import {module} failed: {stderr.strip().splitlines()[-1:]}")
    # Lines look like "import time:   self [us] | cumulative | imported package".
    for line in stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1e6
    raise BenchError(f"no -X importtime line for {module!r}")


def _importing(module: str) -> Workload:
    async def once() -> float:
        return await import_seconds(module)

    return Workload(once)


def flujo_actors_import(_size: int) -> Workload:
    """``import flujo_actors``."""
    return _importing("flujo_actors")


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
        targets=(Target(max=150.0),),
    ),
]
