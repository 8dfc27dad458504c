"""``make demo``: a research-assistant pipeline run end to end, no servers needed.

The agents are deterministic stand-ins for LLM calls and tools (they sleep a
little and report usage the Flujo way), so the run is reproducible offline:

    plan -> fan-out research (3 parallel branches) -> draft/critique loop
         -> flaky publisher (succeeds on retry) -> translator with a fallback

then a small ingest pipeline persisted to a SQLite file: a worker process
runs it and is killed (SIGKILL) in its third step; this process resumes the
run from the file and runs only the steps that had not completed.

Every claim the demo prints is also asserted (:class:`DemoClaimFailed` if one
does not hold): what ran in each process, the retry, the fallback, the loop,
that the research branches overlapped, and the totals.

Run it with ``python -m flujo_actors.demo``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
from decimal import Decimal
from typing import Any, Final

import attrs
import trio

from . import Flujo, PipelineContext, PipelineResult, SQLiteBackend, Step, UsageLimits
from .testing import UsageOutput

__all__ = ["DemoClaimFailed", "ResearchContext", "build_pipeline", "main", "render"]

SOURCES: Final = (("web", "0.010"), ("papers", "0.020"), ("docs", "0.005"))


class DemoClaimFailed(AssertionError):
    """Something the demo prints did not actually happen."""


def claim(holds: bool, what: str) -> None:
    """Check a claim the demo makes (a demo must show what it says)."""
    if not holds:
        raise DemoClaimFailed(f"demo claim does not hold: {what}")


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


class Overlap:
    """Records which searches were running at once (proof of concurrency, not timing)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    def enter(self) -> None:
        self.running += 1
        self.most = max(self.most, self.running)

    def leave(self) -> None:
        self.running -= 1


def researcher(source: str, cost: str, overlap: Overlap) -> Step:
    async def research(data: Any, *, context: ResearchContext) -> UsageOutput:
        overlap.enter()
        try:
            await trio.sleep(0.05)  # stands for a search call; the three run concurrently
        finally:
            overlap.leave()
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


def build_pipeline(overlap: Overlap | None = None) -> Any:
    overlap = overlap if overlap is not None else Overlap()
    fan_out = Step.parallel(
        "research", {name: researcher(name, cost, overlap) for name, cost in SOURCES}
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


#: The exit status of a process killed by SIGKILL, as trio.run_process reports it.
KILLED: Final = -signal.SIGKILL
INGEST_STEPS: Final = 4
KILL_AT: Final = 2


def build_ingest(ran: list[str], kill_at: int | None = None, *, announce: bool = False) -> Any:
    """Four steps, each adding 10; with ``kill_at``, that step kills its own process.

    ``ran`` gets each step's name as it completes; with ``announce`` (the
    worker process) it is printed too, so the parent can tell what ran there
    before the process died.
    """

    def make(i: int) -> Step:
        async def ingest(batch: int) -> int:
            if kill_at == i:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real crash
            ran.append(f"ingest_{i}")
            if announce:
                print(f"ran ingest_{i}", flush=True)
            return batch + 10

        return Step.from_callable(ingest, name=f"ingest_{i}", max_retries=0)

    steps = [make(i) for i in range(INGEST_STEPS)]
    return steps[0] >> steps[1] >> steps[2] >> steps[3]


def ingest_worker(db_path: str) -> None:
    """The worker process: start the persisted run; step ``KILL_AT`` kills the process."""
    runner = Flujo(build_ingest([], KILL_AT, announce=True), state_backend=SQLiteBackend(db_path))
    trio.run(functools.partial(runner.run_async, 0, run_id="ingest-demo"))


async def persistence_demo(db_path: str) -> None:
    """Run in a worker process killed in step 2, resume here: steps 0 and 1 do not run again."""
    worker = await trio.run_process(
        [
            sys.executable,
            "-c",
            "import sys; from flujo_actors.demo import ingest_worker; ingest_worker(sys.argv[1])",
            db_path,
        ],
        capture_stdout=True,
        check=False,
    )
    ran_there = [line.removeprefix("ran ") for line in worker.stdout.decode().splitlines() if line]
    claim(worker.returncode == KILLED, f"the worker was killed (status {worker.returncode})")
    claim(ran_there == ["ingest_0", "ingest_1"], f"the worker ran ingest_0, ingest_1: {ran_there}")
    print(
        f"\ningest, worker process: ran {ran_there}, then was killed in ingest_{KILL_AT} "
        f"(exit status {worker.returncode}); its state is in {os.path.basename(db_path)}"
    )

    ran_here: list[str] = []
    runner = Flujo(build_ingest(ran_here), state_backend=SQLiteBackend(db_path))
    result = await runner.resume_async("ingest-demo")
    claim(ran_here == ["ingest_2", "ingest_3"], f"the resume ran only ingest_2, 3: {ran_here}")
    claim(result.success and result.output == 40, f"the resumed run finished: {result.output!r}")
    claim(
        [r.name for r in result.step_history] == [f"ingest_{i}" for i in range(INGEST_STEPS)],
        "the resumed result holds all four steps",
    )
    print(
        f"ingest, this process: resume_async ran {ran_here} (ingest_0 and ingest_1 not "
        f"again), output {result.output}, success={result.success}"
    )


def check_research(result: PipelineResult, overlap: Overlap) -> None:
    """Assert what ``render`` shows about the research run."""
    claim(result.success, "the research run succeeded")
    by_name = {r.name: r for r in result.step_history}
    claim(overlap.most == len(SOURCES), f"all three searches ran at once ({overlap.most})")
    claim(by_name["publish"].attempts == 2, "the publisher succeeded on its second attempt")
    translate = by_name["translate_premium"]
    claim(
        translate.metadata.get("fallback_triggered") is True
        and [r.name for r in translate.step_history] == ["translate_basic"],
        "the premium translator failed and its fallback translated",
    )
    refine = by_name["refine"]
    claim(
        refine.metadata.get("iterations") == 3
        and refine.metadata.get("exit_reason") == "condition",
        "the loop stopped by its condition after 3 drafts",
    )
    costs = sum((r.cost_usd for r in result.step_history), Decimal(0))
    claim(
        result.total_cost_usd == costs == Decimal("0.041"), f"total cost ${result.total_cost_usd}"
    )
    claim(result.total_tokens == 3 * 120 + 3 * 300, f"total tokens {result.total_tokens}")


async def main() -> None:
    overlap = Overlap()
    runner = Flujo(
        build_pipeline(overlap),
        context_model=ResearchContext,
        usage_limits=UsageLimits(total_cost_usd_limit=Decimal("1.00")),
    )
    result = await runner.run_async("What is trio?")
    print(render(result))
    print(f"research: {overlap.most} searches were running at the same time")
    check_research(result, overlap)
    with tempfile.TemporaryDirectory() as tmp:
        await persistence_demo(os.path.join(tmp, "runs.db"))


if __name__ == "__main__":
    # Run the module's functions under their importable name, flujo_actors.demo, not
    # __main__: the worker process builds the same pipeline, and a run is resumed only
    # by a pipeline with the same fingerprint (agents by module:qualname).
    from flujo_actors.demo import main as _main

    trio.run(_main)
