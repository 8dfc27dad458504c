"""A 20-step pipeline run in a subprocess by test_crash_resume.py.

Usage: python -c "import crash_worker; crash_worker.main()" run|resume DB EFFECTS RUN_ID [KILL_AT]

Each step appends its index to EFFECTS (flushed and fsynced: the side effect
is real before the step returns). With KILL_AT=k, step k SIGKILLs its own
process before its side effect, the way a crash would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import attrs
import trio

from flujo_actors import Flujo, Pipeline, PipelineContext, Step
from flujo_actors.backends.sqlite import SQLiteBackend

N_STEPS = 20


@attrs.define
class CrashContext(PipelineContext):
    trail: list[int] = attrs.Factory(list)


def build(effects: str, kill_at: int | None) -> Pipeline:
    def make(i: int) -> Step:
        async def work(x: int, *, context: CrashContext) -> int:
            if kill_at == i:
                os.kill(os.getpid(), signal.SIGKILL)
            # Blocking on purpose: the side effect must be on disk before the step returns.
            with open(effects, "a") as f:  # noqa: ASYNC230
                f.write(f"{i}\n")
                f.flush()
                os.fsync(f.fileno())
            context.trail.append(i)
            return (x * 31 + i) % 1_000_003

        return Step.from_callable(work, name=f"step{i:02d}", max_retries=0)

    return Pipeline(steps=[make(i) for i in range(N_STEPS)], name="crashy")


def main() -> None:
    mode, db, effects, run_id = sys.argv[1:5]
    kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else None
    runner = Flujo(
        build(effects, kill_at), context_model=CrashContext, state_backend=SQLiteBackend(db)
    )

    async def go() -> Any:
        if mode == "run":
            return await runner.run_async(7, run_id=run_id)
        return await runner.resume_async(run_id)

    result = trio.run(go)
    print(
        json.dumps(
            {
                "success": result.success,
                "output": result.output,
                "steps": [r.name for r in result.step_history],
                "trail": result.final_pipeline_context.trail,
            }
        )
    )
