"""Running one case in a fresh interpreter, so each has its own heap and peak RSS.

The parent writes a job file and starts ``python -m flujo_actors.bench _worker JOB OUT``;
the worker re-imports the scenario's file, runs :func:`~.harness.run_case` and writes
the :class:`~.report.CaseResult` as JSON to OUT. A worker that crashes, is killed or
outlives ``timeout_s`` becomes an error row carrying the tail of its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from .discovery import Found, load_module
from .harness import MeasureOptions, Scenario, run_case
from .report import CaseResult, structure, unstructure

__all__ = ["WORKER_COMMAND", "run_isolated", "worker_main"]

#: The hidden CLI subcommand a worker runs.
WORKER_COMMAND: Final = "_worker"

#: How much of a dead worker's stderr is kept in the report.
_STDERR_TAIL: Final = 4000


def _package_root() -> str:
    # The directory holding the flujo_actors package, so the worker imports the same
    # code as the parent even when it is not installed.
    return str(Path(__file__).resolve().parents[2])


def run_isolated(
    found: Found, size: int, options: MeasureOptions, *, timeout_s: float
) -> CaseResult:
    """Measure ``found.scenario`` at ``size`` in a worker process.

    Blocks until the worker ends or ``timeout_s`` passes (the worker is then killed).
    """
    scenario = found.scenario
    with tempfile.TemporaryDirectory(prefix="flujo-bench-job-") as tmp:
        job_path = Path(tmp) / "job.json"
        out_path = Path(tmp) / "result.json"
        job = {
            "path": str(found.path),
            "scenario": scenario.name,
            "size": size,
            "options": unstructure(options),
        }
        job_path.write_text(json.dumps(job), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
        )
        command = [
            sys.executable,
            "-m",
            "flujo_actors.bench",
            WORKER_COMMAND,
            str(job_path),
            str(out_path),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            stderr = (
                exc.stderr.decode(errors="replace")
                if isinstance(exc.stderr, bytes)
                else exc.stderr or ""
            )
            return _failed(
                scenario,
                size,
                found.path,
                f"timed out after {timeout_s:g} s (raise --timeout)",
                stderr,
            )
        if out_path.exists():
            result = structure(json.loads(out_path.read_text(encoding="utf-8")), CaseResult)
            return result
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
        return _failed(
            scenario,
            size,
            found.path,
            f"worker exited with code {done.returncode}: {last}",
            done.stderr,
        )


def _failed(scenario: Scenario, size: int, path: Path, message: str, stderr: str) -> CaseResult:
    return CaseResult(
        scenario=scenario.name,
        size=size,
        status="error",
        unit=scenario.unit,
        description=scenario.description,
        module=str(path),
        error=message,
        error_detail=stderr[-_STDERR_TAIL:] or None,
        isolated=True,
    )


def worker_main(job_path: str, out_path: str) -> int:
    """Run the job in ``job_path`` and write its result to ``out_path`` (exit status 0)."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    path = Path(job["path"])
    options = structure(job["options"], MeasureOptions)
    module = load_module(path)
    matches = [
        s
        for s in getattr(module, "SCENARIOS", ())
        if isinstance(s, Scenario) and s.name == job["scenario"]
    ]
    if not matches:
        print(f"{path.name} no longer declares scenario {job['scenario']!r}", file=sys.stderr)
        return 1
    result = run_case(matches[0], int(job["size"]), options, module=str(path), isolated=True)
    Path(out_path).write_text(json.dumps(unstructure(result)), encoding="utf-8")
    return 0
