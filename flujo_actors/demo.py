"""``make demo``: a research-assistant pipeline run end to end, no servers needed.

The agents are deterministic stand-ins for LLM calls and tools (they sleep a
little and report usage the Flujo way), so the run is reproducible offline:

    plan -> fan-out research (3 parallel branches) -> draft/critique loop
         -> flaky publisher (succeeds on retry) -> translator with a fallback

then a small ingest pipeline persisted to a SQLite file, "crashed" mid-run
and resumed without re-running the steps that had completed.

Run it with ``python -m flujo_actors.demo``.
"""

from __future__ import annotations

import os
import tempfile
from decimal import Decimal
from typing import Any

import attrs
import trio

from . import Flujo, PipelineContext, PipelineResult, SQLiteBackend, Step, UsageLimits
from .testing import UsageOutput

__all__ = ["ResearchContext", "build_pipeline", "main", "render"]


@attrs.define
class ResearchContext(PipelineContext):
    """What the steps share: the topic, the facts found, the draft's revisions."""

    topic: str = ""
    facts: list[str] = attrs.Factory(list)
    revisions: int = 0


async def plan(question: str) -> dict[str, Any]:
    """Pick the topic (written onto the context: ``updates_context=True``)."""
    await trio.sleep(0.01)
    return {"topic": question.rstrip("?").split()[-1]}


def researcher(source: str, cost: str) -> Step:
    async def research(data: Any, *, context: ResearchContext) -> UsageOutput:
        await trio.sleep(0.05)  # the three sources are searched concurrently
        fact = f"{source}: {context.topic} is cooperative multitasking done right"
        context.scratchpad[source] = fact
        return UsageOutput(fact, cost_usd=Decimal(cost), token_counts=120)

    return Step.from_callable(research, name=f"search_{source}")


async def collect(found: dict[str, UsageOutput], *, context: ResearchContext) -> str:
    context.facts = [found[k].value for k in sorted(found)]
    return "\n".join(context.facts)


async def draft(notes: str, *, context: ResearchContext) -> UsageOutput:
    context.revisions += 1
    text = f"Draft v{context.revisions} about {context.topic} ({len(context.facts)} facts)"
    return UsageOutput(text, cost_usd=Decimal("0.002"), token_counts=300)


class FlakyPublisher:
    """Fails its first call (a transient outage), then publishes."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, data: UsageOutput) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("publisher briefly unavailable")
        return f"PUBLISHED: {data.value}"


async def translate_premium(text: str) -> str:
    raise TimeoutError("premium translator is over quota")


async def translate_basic(text: str) -> str:
    return text.replace("PUBLISHED", "PUBLICADO")


def build_pipeline() -> Any:
    fan_out = Step.parallel(
        "research",
        {
            name: researcher(name, cost)
            for name, cost in [("web", "0.010"), ("papers", "0.020"), ("docs", "0.005")]
        },
    )
    refine = Step.loop_until(
        "refine",
        Step.from_callable(draft),
        lambda out, ctx: ctx.revisions >= 3,
        max_loops=5,
    )
    publish = Step(name="publish", agent=FlakyPublisher())
    translate = Step.from_callable(
        translate_premium,
        max_retries=0,
        fallback=Step.from_callable(translate_basic),
    )
    return (
        Step.from_callable(plan, updates_context=True)
        >> fan_out
        >> Step.from_callable(collect)
        >> refine
        >> publish
        >> translate
    )


def render(result: PipelineResult) -> str:
    """A readable account of a run."""
    lines = [f"run {result.run_id[:8]}: success={result.success}"]

    def walk(steps: list[Any], depth: int) -> None:
        for r in steps:
            extra = []
            if r.attempts > 1:
                extra.append(f"attempts={r.attempts}")
            for key in ("iterations", "exit_reason", "fallback_triggered"):
                if key in r.metadata:
                    extra.append(f"{key}={r.metadata[key]}")
            if r.cost_usd:
                extra.append(f"cost=${r.cost_usd}")
            mark = "ok " if r.success else "FAIL"
            lines.append(
                f"{'  ' * (depth + 1)}{mark} {r.name:<16} {r.latency_s * 1000:7.1f} ms  {' '.join(extra)}"
            )
            if r.step_history and depth < 1:
                walk(r.step_history[:4], depth + 1)

    walk(result.step_history, 0)
    ctx = result.final_pipeline_context
    lines.append(f"topic: {ctx.topic!r}, revisions: {ctx.revisions}, facts: {len(ctx.facts)}")
    lines.append(f"total: ${result.total_cost_usd} / {result.total_tokens} tokens")
    lines.append(f"output: {result.output}")
    return "\n".join(lines)


class PowerCut(BaseException):
    """Stands in for the process dying mid-run (nothing retries it)."""


def build_ingest(log: list[str], fail_at: list[int | None]) -> Any:
    """Four steps; step ``fail_at`` "loses power" the first time it runs."""

    def make(i: int) -> Step:
        async def ingest(batch: int) -> int:
            if fail_at[0] == i:
                fail_at[0] = None
                raise PowerCut
            log.append(f"ingest_{i}")
            return batch + 10

        return Step.from_callable(ingest, name=f"ingest_{i}", max_retries=0)

    steps = [make(i) for i in range(4)]
    return steps[0] >> steps[1] >> steps[2] >> steps[3]


async def persistence_demo(db_path: str) -> None:
    """Persist to SQLite, crash in step 2, resume: steps 0 and 1 do not run again."""
    log: list[str] = []
    runner = Flujo(build_ingest(log, [2]), state_backend=SQLiteBackend(db_path))
    try:
        await runner.run_async(0, run_id="ingest-demo")
    except PowerCut:
        print(f"\ningest: power cut during ingest_2 after {log}; state is in {db_path}")
    result = await runner.resume_async("ingest-demo")
    print(f"ingest: resumed -> ran {log}, output {result.output}, success={result.success}")


async def main() -> None:
    runner = Flujo(
        build_pipeline(),
        context_model=ResearchContext,
        usage_limits=UsageLimits(total_cost_usd_limit=Decimal("1.00")),
    )
    result = await runner.run_async("What is trio?")
    print(render(result))
    with tempfile.TemporaryDirectory() as tmp:
        await persistence_demo(os.path.join(tmp, "runs.db"))


if __name__ == "__main__":
    trio.run(main)
