"""A pipeline tree from a JSON spec, run (or resumed) in a subprocess by test_durable_kill.py.

Usage: python -c "import durable_kill_worker as w; w.main()" run|resume DB EFFECTS SPEC KILL_AT MODE
(the test starts :func:`child` in forked processes: a fresh process each
time, without paying the interpreter start and the imports again).

Every agent appends its idempotency key (one per step position) to EFFECTS,
flushed, before it returns. The KILL_AT-th agent call of the process (1-based;
0: never) SIGKILLs the process: before its side effect (MODE ``before``) or
after it, before returning (MODE ``after``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import trio

from flujo_actors import AnyStep, Flujo, Pipeline, PipelineContext, Step
from flujo_actors.backends.sqlite import SQLiteBackend

RUN_ID = "r"


def value_of(x: Any) -> int:
    if isinstance(x, dict):
        return sum(value_of(v) for v in x.values()) % 1_000_003
    if isinstance(x, int):
        return x
    return 0


class Builder:
    """Builds the tree, naming steps in traversal order (the same in every process)."""

    def __init__(self, effects: str, kill_at: int, mode: str) -> None:
        self.effects = effects
        self.kill_at = kill_at
        self.mode = mode
        self.calls = 0
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def leaf(self, name: str, tick: str | None = None) -> Step:
        def agent(x: Any, *, context: PipelineContext, idempotency_key: str) -> int:
            self.calls += 1
            kill = self.calls == self.kill_at
            if kill and self.mode == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            # Blocking on purpose: the side effect is in the file before the step returns.
            with open(self.effects, "a") as f:
                f.write(f"{idempotency_key} {name}\n")
                f.flush()
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            out = (value_of(x) * 31 + self.count_of(name)) % 1_000_003
            if tick is not None:
                context.scratchpad[tick] = context.scratchpad.get(tick, 0) + 1
            else:
                context.scratchpad[name] = out
            return out

        agent.__qualname__ = f"leaf_{name}"
        return Step.from_callable(agent, name=name, max_retries=0)

    @staticmethod
    def count_of(name: str) -> int:
        return int("".join(c for c in name if c.isdigit()) or 0)

    def steps(self, spec: dict[str, Any]) -> list[AnyStep]:
        if spec["t"] == "seq":
            return [s for child in spec["c"] for s in self.steps(child)]
        return [self.step(spec)]

    def pipeline(self, spec: dict[str, Any]) -> Pipeline:
        return Pipeline(steps=self.steps(spec))

    def step(self, spec: dict[str, Any]) -> AnyStep:
        kind = spec["t"]
        if kind == "leaf":
            return self.leaf(self.name("a"))
        if kind == "seq":
            return self.pipeline(spec).as_step(self.name("seq"))
        if kind == "nested":
            return self.pipeline(spec["c"][0]).as_step(self.name("n"))
        if kind == "loop":
            name = self.name("loop")
            counter = f"{name}_count"
            body = Pipeline(
                steps=[
                    *self.steps({"t": "seq", "c": spec["c"]}),
                    self.leaf(f"{name}_tick", counter),
                ]
            )
            n = spec["n"]
            return Step.loop_until(
                name,
                body,
                lambda out, ctx: ctx.scratchpad.get(counter, 0) >= n,
                max_loops=n,
            )
        if kind == "par":
            name = self.name("par")
            return Step.parallel(
                name, {f"b{i}": self.pipeline(child) for i, child in enumerate(spec["c"])}
            )
        if kind == "cond":
            name = self.name("cond")
            return Step.branch_on(
                name,
                lambda data, ctx: "even" if value_of(data) % 2 == 0 else "odd",
                {"even": self.pipeline(spec["c"][0]), "odd": self.pipeline(spec["c"][1])},
            )
        raise ValueError(f"unknown node {kind!r}")


def runner(spec: dict[str, Any], db: str | None, effects: str, kill_at: int, mode: str) -> Flujo:
    pipeline = Builder(effects, kill_at, mode).pipeline(spec)
    backend = SQLiteBackend(db, synchronous="NORMAL") if db is not None else None
    return Flujo(pipeline, state_backend=backend)


def summary(result: Any) -> dict[str, Any]:
    return {
        "success": result.success,
        "status": result.status,
        "output": result.output,
        "scratchpad": result.final_pipeline_context.scratchpad,
    }


def child(args: list[str], out_path: str) -> None:
    """Run or resume as ``main`` does; write the summary to ``out_path`` (a process target)."""
    mode, db, effects, spec_path, kill_at, kill_mode = args
    with open(spec_path) as f:
        spec = json.load(f)
    flujo = runner(spec, db, effects, int(kill_at), kill_mode)

    async def go() -> Any:
        if mode == "run":
            return await flujo.run_async(1, run_id=RUN_ID)
        return await flujo.resume_async(RUN_ID)

    text = json.dumps(summary(trio.run(go)))
    with open(out_path, "w") as f:
        f.write(text)


def main() -> None:
    out = sys.argv[7] if len(sys.argv) > 7 else "/dev/stdout"
    child(sys.argv[1:7], out)
