"""Flujo.fork_async: a new run from a stored run's checkpoint before a top-level step."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import (
    Flujo,
    InMemoryStateBackend,
    PipelineContext,
    PipelineDefinitionError,
    RunExistsError,
    RunNotFoundError,
    SQLiteBackend,
    Step,
)

if TYPE_CHECKING:
    from pathlib import Path


@attrs.define
class Ctx(PipelineContext):
    tone: str = "plain"
    notes: list[str] = attrs.Factory(list)


@attrs.frozen
class Facts:
    text: str
    cost_usd: float = 0.25
    token_counts: int = 100


calls: list[str] = []


def _exact(text: str) -> str:
    return "^" + re.escape(text) + "$"


async def research(topic: str, *, context: Ctx) -> Facts:
    calls.append("research")
    context.notes.append("researched")
    return Facts(f"facts about {topic}")


async def draft(facts: Facts, *, context: Ctx) -> str:
    calls.append(f"draft:{context.tone}")
    context.notes.append(f"drafted {context.tone}")
    return f"{context.tone} draft of {facts.text}"


async def draft_v2(facts: Facts, *, context: Ctx) -> str:
    calls.append(f"draft_v2:{context.tone}")
    return f"v2 {context.tone} draft of {facts.text}"


async def publish(text: str) -> str:
    calls.append("publish")
    return text.upper()


def _pipeline(drafter: Any = draft) -> Any:
    return (
        Step.from_callable(research, name="research")
        >> Step.from_callable(drafter, name="draft")
        >> Step.from_callable(publish, name="publish")
    )


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    calls.clear()
    if request.param == "memory":
        return InMemoryStateBackend()
    return SQLiteBackend(tmp_path / "runs.db")


async def test_a_fork_reuses_the_steps_before_it_and_reruns_the_rest(backend: Any) -> None:
    runner = Flujo(_pipeline(), context_model=Ctx, state_backend=backend)
    original = await runner.run_async("otters", run_id="orig")
    assert calls == ["research", "draft:plain", "publish"]
    calls.clear()

    fork = await runner.fork_async(
        "orig", at="draft", context_updates={"tone": "witty"}, run_id="witty"
    )
    assert calls == ["draft:witty", "publish"]  # research was not paid for again
    assert fork.success and fork.run_id == "witty"
    assert fork.output == "WITTY DRAFT OF FACTS ABOUT OTTERS"
    assert [s.name for s in fork.step_history] == ["research", "draft", "publish"]
    assert fork.total_cost_usd == Decimal("0.25") and fork.total_tokens == 100
    ctx = fork.final_pipeline_context
    assert (ctx.run_id, ctx.tone, ctx.notes) == ("witty", "witty", ["researched", "drafted witty"])
    assert ctx.initial_prompt == "otters"

    # The original is untouched.
    again = await runner.resume_async("orig")
    assert again.output == original.output == "PLAIN DRAFT OF FACTS ABOUT OTTERS"
    assert again.final_pipeline_context.notes == ["researched", "drafted plain"]
    stored = await backend.load_state("witty")
    assert stored.status == "completed" and len(stored.step_history) == 3
    await backend.aclose()


async def test_a_fork_may_change_the_steps_after_its_point(backend: Any) -> None:
    await Flujo(_pipeline(), context_model=Ctx, state_backend=backend).run_async("x", run_id="o")
    calls.clear()
    changed = Flujo(_pipeline(draft_v2), context_model=Ctx, state_backend=backend)
    fork = await changed.fork_async("o", at=1)
    assert calls == ["draft_v2:plain", "publish"]
    assert fork.output == "V2 PLAIN DRAFT OF FACTS ABOUT X"
    assert len(fork.run_id) == 32  # a generated id
    # Forking past the change would reuse a step this pipeline does not have.
    with pytest.raises(
        PipelineDefinitionError, match=r"differ from this runner's pipeline at steps\[1\]"
    ):
        await changed.fork_async("o", at="publish")
    await backend.aclose()


async def test_a_fork_at_the_first_step_starts_from_the_runners_own_context(backend: Any) -> None:
    runner = Flujo(
        _pipeline(), context_model=Ctx, initial_context_data={"tone": "dry"}, state_backend=backend
    )
    await runner.run_async("seals", run_id="o")
    calls.clear()
    fork = await runner.fork_async("o", at=0, context_updates={"notes": ["from fork"]})
    assert calls == ["research", "draft:dry", "publish"]
    assert fork.final_pipeline_context.notes == ["from fork", "researched", "drafted dry"]
    await backend.aclose()


async def test_a_failed_run_is_forked_at_its_failed_step() -> None:
    backend = InMemoryStateBackend()
    calls.clear()

    async def broken(facts: Any, *, context: Ctx) -> str:
        raise RuntimeError("model down")

    await Flujo(_pipeline(broken), context_model=Ctx, state_backend=backend).run_async(
        "x", run_id="bad"
    )
    fixed = Flujo(_pipeline(draft), context_model=Ctx, state_backend=backend)
    message = (
        "Flujo.fork_async: run 'bad' completed 1 top-level step(s), so it has no checkpoint "
        "before step 2 ('publish'); fork at a step <= 1."
    )
    with pytest.raises(PipelineDefinitionError, match=_exact(message)):
        await fixed.fork_async("bad", at="publish")
    calls.clear()
    fork = await fixed.fork_async("bad", at="draft")
    assert fork.success and calls == ["draft:plain", "publish"]


async def test_bad_fork_arguments_are_refused_naming_the_value() -> None:
    backend = InMemoryStateBackend()
    runner = Flujo(_pipeline(), context_model=Ctx, state_backend=backend)
    await runner.run_async("x", run_id="o")
    steps = "['research', 'draft', 'publish']"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"at": "nope"}, f"Flujo.fork_async: at='nope' names no top-level step of pipeline "
                         f"'pipeline'; its steps are {steps}."),
        ({"at": 3}, "Flujo.fork_async: at=3 is not a top-level step index of pipeline "
                    "'pipeline', which has steps 0..2."),
        ({"at": True}, "Flujo.fork_async: at must be a top-level step name (str) or index "
                       "(int), got True."),
        ({"at": 1, "context_updates": {"run_id": "x"}},
         "Flujo.fork_async: context_updates sets 'run_id', which identifies the run; the fork "
         "gets its own run_id and keeps the run's initial_prompt."),
        ({"at": 1, "context_updates": {"colour": "red"}},
         "Flujo.fork_async: context_updates has field 'colour', which context model Ctx does not "
         "define; its fields are ['scratchpad', 'executed_branches', 'tone', 'notes']."),
        ({"at": 1, "context_updates": ["tone"]},
         "Flujo.fork_async: context_updates must be a mapping of field -> value, got ['tone']."),
        ({"at": 1, "run_id": ""}, "Flujo.fork_async: run_id must be a non-empty str or None, got ''."),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(PipelineDefinitionError, match=_exact(message)):
            await runner.fork_async("o", **kwargs)
    with pytest.raises(RunNotFoundError):
        await runner.fork_async("missing", at=1)
    with pytest.raises(RunExistsError):
        await runner.fork_async("o", at=1, run_id="o")
    assert sorted(await backend.list_runs()) == ["o"]  # nothing half-created
    with pytest.raises(PipelineDefinitionError, match=r"^Flujo\.fork_async needs a state backend"):
        await Flujo(_pipeline(), context_model=Ctx).fork_async("o", at=1)
