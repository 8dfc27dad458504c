"""Crash resume for real: a subprocess is SIGKILLed mid-run, another resumes it from SQLite."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
N_STEPS = 20
# A few fixed points (first, last) plus seeded random ones: reproducible, not hand-picked.
KILL_POINTS = sorted({0, N_STEPS - 1, *random.Random(20261124).sample(range(1, N_STEPS - 1), 3)})


def worker(*args: str, expect_kill: bool = False) -> dict[str, Any] | None:
    proc = subprocess.run(
        [sys.executable, "-c", "import crash_worker; crash_worker.main()", *args],
        cwd=HERE,
        env={"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if expect_kill:
        assert proc.returncode == -9, proc.stderr
        return None
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("clean")
    out = worker("run", str(d / "runs.db"), str(d / "effects.txt"), "clean")
    assert out is not None
    return out


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_then_resume_finishes_without_repeating_steps(
    tmp_path: Path, kill_at: int, uninterrupted: dict[str, Any]
) -> None:
    db, effects = str(tmp_path / "runs.db"), tmp_path / "effects.txt"
    worker("run", db, str(effects), "r1", str(kill_at), expect_kill=True)
    done_before = effects.read_text().split() if effects.exists() else []
    assert done_before == [str(i) for i in range(kill_at)]

    resumed = worker("resume", db, str(effects), "r1")
    assert resumed is not None
    # Every step's side effect happened exactly once.
    assert effects.read_text().split() == [str(i) for i in range(N_STEPS)]
    # Same result as a run that was never interrupted, context included.
    assert resumed == uninterrupted
    assert resumed["success"] is True
    assert resumed["steps"] == [f"step{i:02d}" for i in range(N_STEPS)]
    assert resumed["trail"] == list(range(N_STEPS))
