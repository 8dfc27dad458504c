"""pydantic models as the run context and as values in inputs, outputs and contexts."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from flujo_actors import (
    Flujo,
    InMemoryLRUBackend,
    MergeStrategy,
    PipelineDefinitionError,
    SQLiteBackend,
    Step,
    dump_typed,
    load_typed,
    register_custom_deserializer,
    register_custom_serializer,
    safe_deserialize,
    safe_serialize,
)
from flujo_actors import PipelineContext as AttrsContext
from flujo_actors.pydantic import PipelineContext
from flujo_actors.testing.serializers import isolated_serializer_registry


class Profile(BaseModel):
    name: str
    budget: Decimal = Decimal("0")
    tags: tuple[str, ...] = ()


class Ctx(PipelineContext):
    profile: Profile | None = None
    notes: list[str] = Field(default_factory=list)
    score: int = 0


class Resource(BaseModel):
    url: HttpUrl
    path: Path
    label: str = Field(alias="Label")


class Crash(BaseException):
    """Stands in for the process dying mid-step."""


# -- the context model -----------------------------------------------------------------


async def test_a_pydantic_context_is_built_by_the_runner_and_shared_by_steps() -> None:
    async def first(x: str, *, context: Ctx) -> str:
        context.notes.append("first")
        context.profile = Profile(name=x)
        return x

    async def second(x: str, *, context: Ctx) -> str:
        assert context.profile is not None
        return f"{context.initial_prompt}:{context.profile.name}:{context.notes}"

    runner = Flujo(
        Step.from_callable(first) >> Step.from_callable(second),
        context_model=Ctx,
        initial_context_data={"score": 3},
    )
    result = await runner.run_async("ada", run_id="r1")
    assert result.output == "ada:ada:['first']"
    ctx = result.final_pipeline_context
    assert type(ctx) is Ctx
    assert (ctx.run_id, ctx.initial_prompt, ctx.score) == ("r1", "ada", 3)


def test_the_pydantic_base_context_has_the_four_fields() -> None:
    ctx = PipelineContext()
    assert ctx.model_dump() == {
        "initial_prompt": None,
        "run_id": "",
        "scratchpad": {},
        "executed_branches": [],
    }


def test_pydantic_context_models_are_checked() -> None:
    class NoIds(BaseModel):
        scratchpad: dict[str, Any] = Field(default_factory=dict)

    async def f(x: str) -> str:
        return x

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo: context_model NoIds lacks the field\(s\) \['initial_prompt', 'run_id'\]; "
        r"subclass PipelineContext to get them\.$",
    ):
        Flujo(Step.from_callable(f), context_model=NoIds)

    class Strict(PipelineContext):
        level: int

    with pytest.raises(
        PipelineDefinitionError,
        match=r"(?s)^Flujo: initial_context_data cannot build context Strict: ValidationError: "
        r".*level.*Pass values the model accepts \(and every field it requires\)\.$",
    ):
        Flujo(Step.from_callable(f), context_model=Strict)


async def test_a_failed_attempt_leaves_no_trace_on_a_pydantic_context() -> None:
    calls: list[int] = []

    async def flaky(x: str, *, context: Ctx) -> str:
        calls.append(1)
        context.notes.append(f"attempt{len(calls)}")
        context.scratchpad["n"] = len(calls)
        if len(calls) == 1:
            raise ValueError("first fails")
        return x

    result = await Flujo(Step.from_callable(flaky, max_retries=1), context_model=Ctx).run_async("x")
    ctx = result.final_pipeline_context
    assert result.success and ctx.notes == ["attempt2"] and ctx.scratchpad == {"n": 2}


def _branch(tag: str, score: int, note: str | None = None) -> Step:
    async def write(x: str, *, context: Ctx) -> str:
        context.scratchpad[tag] = tag
        context.scratchpad["shared"] = tag
        context.score = score
        if note is not None:
            context.profile = Profile(name=note)
        return tag

    return Step.from_callable(write, name=tag)


@pytest.mark.parametrize(
    ("merge", "scratchpad", "score", "profile"),
    [
        (MergeStrategy.CONTEXT_UPDATE, {"a": "a", "b": "b", "shared": "b"}, 2, "pa"),
        (MergeStrategy.OVERWRITE, {"b": "b", "shared": "b"}, 2, None),  # the last wins whole
        (MergeStrategy.KEEP_FIRST, {"a": "a", "b": "b", "shared": "a"}, 1, "pa"),
        (MergeStrategy.NO_MERGE, {}, 0, None),
    ],
)
async def test_every_merge_strategy_on_a_pydantic_context(
    merge: MergeStrategy, scratchpad: dict[str, str], score: int, profile: str | None
) -> None:
    fan = Step.parallel(
        "fan", {"a": _branch("a", 1, "pa"), "b": _branch("b", 2)}, merge_strategy=merge
    )
    result = await Flujo(fan, context_model=Ctx).run_async("x")
    assert result.success, result.step_history[-1].feedback
    ctx = result.final_pipeline_context
    assert type(ctx) is Ctx
    assert ctx.scratchpad == scratchpad and ctx.score == score
    assert (ctx.profile.name if ctx.profile else None) == profile


async def test_error_on_conflict_and_callable_merges_on_a_pydantic_context() -> None:
    fan = Step.parallel(
        "fan",
        {"a": _branch("a", 1), "b": _branch("b", 2)},
        merge_strategy=MergeStrategy.ERROR_ON_CONFLICT,
    )
    result = await Flujo(fan, context_model=Ctx).run_async("x")
    assert not result.success
    assert result.step_history[-1].feedback is not None
    assert "branches 'a' and 'b'" in result.step_history[-1].feedback

    def total(main: Ctx, branch: Ctx) -> None:
        main.score += branch.score

    fan = Step.parallel("fan", {"a": _branch("a", 1), "b": _branch("b", 2)}, merge_strategy=total)
    result = await Flujo(fan, context_model=Ctx).run_async("x")
    assert result.final_pipeline_context.score == 3


async def test_branches_get_their_own_copies_and_include_keys_reset_the_rest() -> None:
    seen: list[tuple[int, list[str]]] = []

    async def look(x: str, *, context: Ctx) -> str:
        seen.append((context.score, list(context.notes)))
        context.notes.append("branch")  # a copy: the main context is untouched
        return x

    async def seed(x: str, *, context: Ctx) -> str:
        context.score = 7
        context.notes.append("main")
        return x

    fan = Step.parallel(
        "fan",
        {"a": Step.from_callable(look, name="a")},
        merge_strategy=MergeStrategy.NO_MERGE,
        context_include_keys=["score"],
    )
    result = await Flujo(Step.from_callable(seed) >> fan, context_model=Ctx).run_async("x")
    assert seen == [(7, [])]  # notes fell back to their default factory
    assert result.final_pipeline_context.notes == ["main"]


class Update(BaseModel):
    score: int
    notes: list[str]


class Bogus(BaseModel):
    mood: str = "ok"


async def test_a_pydantic_output_is_a_valid_context_update() -> None:
    async def grade(x: str) -> Update:
        return Update(score=9, notes=["graded"])

    result = await Flujo(
        Step.from_callable(grade, updates_context=True), context_model=Ctx
    ).run_async("x")
    ctx = result.final_pipeline_context
    assert (ctx.score, ctx.notes) == (9, ["graded"])

    # ... onto an attrs context too, and an unknown field fails the step clearly.
    @attrs.define
    class Plain(AttrsContext):
        score: int = 0
        notes: list[str] = attrs.Factory(list)

    result = await Flujo(
        Step.from_callable(grade, updates_context=True), context_model=Plain
    ).run_async("x")
    assert result.final_pipeline_context.score == 9

    async def bogus(x: str) -> Bogus:
        return Bogus()

    result = await Flujo(
        Step.from_callable(bogus, updates_context=True), context_model=Ctx
    ).run_async("x")
    assert not result.success
    assert result.step_history[-1].feedback is not None
    assert "['mood'], which is not a field of Ctx" in result.step_history[-1].feedback


async def test_nested_pipelines_build_fresh_pydantic_contexts() -> None:
    async def inner(x: str, *, context: Ctx) -> str:
        return f"{type(context).__name__}:{context.initial_prompt}:{context.score}"

    sub = Flujo(Step.from_callable(inner), context_model=Ctx, initial_context_data={"score": 5})
    result = await Flujo(sub.as_step("sub")).run_async("in")
    assert result.output == "Ctx:in:5"


# -- persistence, resume, cache -------------------------------------------------------


async def test_resume_with_sqlite_restores_the_pydantic_context_and_values(
    tmp_path: Path,
) -> None:
    crash = [True]

    async def remember(x: str, *, context: Ctx) -> Profile:
        context.profile = Profile(name=x, budget=Decimal("1.10"), tags=("a", "b"))
        context.scratchpad["model"] = Profile(name="in scratchpad")
        context.scratchpad["money"] = Decimal("0.30")
        return Profile(name="out")

    async def maybe_crash(p: Profile, *, context: Ctx) -> Profile:
        if crash[0]:
            crash[0] = False
            raise Crash
        return p

    async def check(p: Profile, *, context: Ctx) -> str:
        assert type(p) is Profile and p.name == "out"
        assert type(context) is Ctx and context.profile is not None
        assert context.profile == Profile(name="in", budget=Decimal("1.10"), tags=("a", "b"))
        assert type(context.scratchpad["model"]) is Profile
        assert context.scratchpad["money"] == Decimal("0.30")
        return "checked"

    pipeline = (
        Step.from_callable(remember, max_retries=0)
        >> Step.from_callable(maybe_crash, max_retries=0)
        >> Step.from_callable(check, max_retries=0)
    )
    db = os.fspath(tmp_path / "runs.db")
    with pytest.raises(Crash):
        await Flujo(pipeline, context_model=Ctx, state_backend=SQLiteBackend(db)).run_async(
            "in", run_id="p1"
        )
    # A new runner (as after a restart) resumes from the stored JSON.
    result = await Flujo(pipeline, context_model=Ctx, state_backend=SQLiteBackend(db)).resume_async(
        "p1"
    )
    assert result.success, result.step_history[-1].feedback
    assert result.output == "checked"
    assert type(result.final_pipeline_context) is Ctx


async def test_cache_hits_return_the_same_pydantic_class() -> None:
    calls: list[str] = []

    async def profile(x: str) -> Profile:
        calls.append(x)
        return Profile(name=x, budget=Decimal("2.5"))

    cached = Step.from_callable(profile, cache=True)
    runner = Flujo(cached, cache_backend=InMemoryLRUBackend())
    first = await runner.run_async("ada")
    again = await runner.run_async("ada")
    assert calls == ["ada"]
    assert again.step_history[-1].metadata["cache_hit"] is True
    assert type(again.output) is Profile and again.output == first.output
    assert again.output is not first.output


# -- serialization without registration ------------------------------------------------


def test_models_round_trip_through_every_entry_point_without_registration() -> None:
    p = Profile(name="ada", budget=Decimal("1.25"), tags=("x",))
    assert safe_serialize(p) == {"name": "ada", "budget": "1.25", "tags": ["x"]}
    assert safe_deserialize(safe_serialize(p), Profile) == p
    back = load_typed(dump_typed({"one": p, "many": [p, p], "ctx": Ctx(profile=p)}))
    assert isinstance(back, dict)
    assert back["one"] == p and type(back["one"]) is Profile
    assert back["many"] == [p, p]
    assert type(back["ctx"]) is Ctx and back["ctx"].profile == p

    @attrs.define
    class Holder:
        profile: Profile
        items: list[Profile]

    h = Holder(p, [p])
    assert safe_deserialize(safe_serialize(h), Holder) == h
    assert load_typed(dump_typed(h)) == h


def test_pydantic_only_types_and_aliases_round_trip() -> None:
    r = Resource(url="https://example.org/x", path=Path("/tmp/data.csv"), Label="main")  # type: ignore[arg-type]
    assert safe_deserialize(safe_serialize(r), Resource) == r
    back = load_typed(dump_typed(r))
    assert back == r and type(back) is Resource

    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        x: int = 0

    loose = Loose(x=1, extra_field=Decimal("2"))  # type: ignore[call-arg]
    again = load_typed(dump_typed(loose))
    assert again == loose and again.extra_field == Decimal("2")  # type: ignore[attr-defined]


def test_registered_hooks_still_win_for_a_model_class() -> None:
    with isolated_serializer_registry():
        register_custom_serializer(Profile, lambda p: p.name)
        register_custom_deserializer(Profile, lambda name: Profile(name=name))
        assert safe_serialize(Profile(name="ada")) == "ada"
        assert load_typed(dump_typed(Profile(name="ada", budget=Decimal(3)))) == Profile(name="ada")
