"""The DSL: building steps and pipelines, and the build-time errors users see."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flujo_actors import (
    Flujo,
    InfiniteFallbackError,
    MergeStrategy,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    Step,
    StepConfig,
    step,
)


async def summarise(data: str) -> str:
    return data[:3]


async def shout(data: str) -> str:
    return data.upper()


def test_from_callable_defaults_name_and_config() -> None:
    s = Step.from_callable(summarise)
    assert s.name == "summarise"
    assert s.config == StepConfig(max_retries=1, timeout_s=None, backoff_s=0.0, backoff_factor=2.0)
    assert s.spec is not None and s.spec.kind == "async"


def test_step_decorator_both_forms() -> None:
    @step
    async def a(x: int) -> int:
        return x

    @step(name="bee", max_retries=3)
    async def b(x: int) -> int:
        return x

    assert isinstance(a, Step) and a.name == "a"
    assert isinstance(b, Step) and b.name == "bee" and b.config.max_retries == 3


def test_rshift_builds_a_flat_ordered_pipeline() -> None:
    a, b, c, d = (Step.from_callable(summarise, name=n) for n in "abcd")
    p = (a >> b) >> (c >> d)
    assert isinstance(p, Pipeline)
    assert [s.name for s in p.steps] == ["a", "b", "c", "d"]
    assert [s.name for s in (a >> (b >> c)).steps] == ["a", "b", "c"]
    assert Pipeline.from_step(a).steps == (a,)


def test_coroutine_object_instead_of_function() -> None:
    coro = summarise("x")
    with pytest.raises(
        PipelineDefinitionError,
        match=re.escape(
            "Agent step 'summarise' expected an async function but got a coroutine object. "
            "Pass summarise, not summarise()."
        ),
    ):
        Step(name="summarise", agent=coro)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": ""},
            "Step name must be a non-empty string, got ''. Pass name='...' (e.g. the agent's purpose).",
        ),
        (
            {"max_retries": -1},
            "Step 'summarise': max_retries must be an int >= 0, got -1. Use max_retries=0 for a single attempt.",
        ),
        (
            {"max_retries": 1.5},
            "Step 'summarise': max_retries must be an int >= 0, got 1.5. Use max_retries=0 for a single attempt.",
        ),
        (
            {"timeout_s": 0},
            "Step 'summarise': timeout_s must be a finite number > 0 or None for no timeout, got 0.",
        ),
        (
            {"backoff_s": -1.0},
            "Step 'summarise': backoff_s must be a finite number >= 0, got -1.0.",
        ),
        (
            {"expected_cost_usd": -0.5},
            "Step 'summarise': expected_cost_usd must be a finite number >= 0 (int, float, "
            "Decimal or numeric str) or None, got -0.5.",
        ),
        (
            {"expected_tokens": -3},
            "Step 'summarise': expected_tokens must be an int >= 0, got -3.",
        ),
        (
            {"placement": "gpu"},
            "Step 'summarise': placement must be one of ('inline', 'process', 'ray') or an executor, got 'gpu'.",
        ),
        (
            {"validators": "nope"},
            None,
        ),
    ],
)
def test_bad_step_arguments(kwargs: dict[str, Any], message: str | None) -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        Step.from_callable(summarise, **kwargs)
    if message is not None:
        assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_single_validator_not_in_a_list() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'summarise': validators must be a list of callables, got a single .*; wrap it: validators=\[\.\.\.\]\.$",
    ):
        Step.from_callable(summarise, validators=lambda o: True)  # type: ignore[arg-type]


def test_agent_without_input_parameter() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(PipelineDefinitionError, match=r"takes no parameter for the step's input"):
        Step.from_callable(nothing)


def test_not_callable_agent() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'x': agent must be an async function, a function, or an object with an async run\(data, \*\*kwargs\) method; got 42\.$",
    ):
        Step(name="x", agent=42)


def test_pipeline_validation() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'pipeline': steps must not be empty; add at least one Step\.$",
    ):
        Pipeline(steps=[])
    with pytest.raises(PipelineDefinitionError, match=r"steps\[0\] must be a Step, got"):
        Pipeline(steps=[summarise])  # type: ignore[list-item]
    inner = Pipeline.from_step(Step.from_callable(summarise))
    with pytest.raises(PipelineDefinitionError, match=r"steps\[0\] is a Pipeline"):
        Pipeline(steps=[inner])  # type: ignore[list-item]
    with pytest.raises(PipelineDefinitionError, match=r"`>>` takes a Step or a Pipeline"):
        Step.from_callable(summarise) >> 3  # type: ignore[operator]


def test_fallback_chain_revisit_is_refused_at_build_and_before_running() -> None:
    a = Step.from_callable(summarise, name="a")
    b = Step.from_callable(shout, name="b", fallback=a)
    # Only a bypass of the seal can make a cycle: it is still caught when the runner is built.
    object.__setattr__(a, "fallback", b)
    with pytest.raises(
        InfiniteFallbackError,
        match=re.escape("the fallback chain 'a' -> 'b' -> 'a' revisits step 'a'"),
    ):
        Flujo(a)
    with pytest.raises(InfiniteFallbackError):
        Step.from_callable(shout, name="c", fallback=b)


def test_a_built_step_cannot_be_given_a_fallback_afterwards() -> None:
    a = Step.from_callable(summarise, name="a")
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'a' cannot be changed once built \(tried to set 'fallback'\): a pipeline "
        r"that was validated must stay valid\. Build a new one instead, e\.g\. "
        r"attrs\.evolve\(step, fallback=\.\.\.\) or Step\.from_callable\(\.\.\., "
        r"fallback=\.\.\.\)\.$",
    ):
        a.fallback = a
    assert a.fallback is None


def test_control_flow_definitions_fail_at_build() -> None:
    s = Step.from_callable(summarise)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'p': branches must not be empty; give at least one branch\.$",
    ):
        Step.parallel("p", {})
    with pytest.raises(
        PipelineDefinitionError, match=r"^Loop step 'l': max_loops must be >= 1, got 0\.$"
    ):
        Step.loop_until("l", s, lambda o, c: True, max_loops=0)
    with pytest.raises(PipelineDefinitionError, match=r"merge_strategy must be a MergeStrategy"):
        Step.parallel("p", {"a": s}, merge_strategy="wat")  # type: ignore[arg-type]
    assert Step.parallel("p", {"a": s}).merge_strategy is MergeStrategy.CONTEXT_UPDATE


def test_recursive_pipeline_is_refused() -> None:
    s = Step.from_callable(summarise)
    p = Pipeline(steps=[s])
    with pytest.raises(AttributeError, match=r"'tuple' object has no attribute 'append'"):
        p.steps.append(p.as_step("me"))  # type: ignore[attr-defined]
    # Only a bypass of the seal can make one: Flujo still refuses it.
    object.__setattr__(p, "steps", (s, p.as_step("me")))
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'pipeline' contains itself \(at pipeline/me\); a pipeline tree "
        r"must not be recursive\.$",
    ):
        Flujo(p)


def test_signature_inspection_decides_keywords_once() -> None:
    async def plain(data: int) -> int:
        return data

    async def with_ctx(data: int, *, context: PipelineContext) -> int:
        return data

    async def with_both(data: int, context: Any = None, resources: Any = None) -> int:
        return data

    async def with_kwargs(data: int, **kwargs: Any) -> int:
        return data

    def sync_fn(data: int) -> int:
        return data

    class Obj:
        async def run(self, data: int, *, resources: Any) -> int:
            return data

    specs = {
        f.__name__ if hasattr(f, "__name__") else "obj": Step.from_callable(f, name="s").spec
        for f in (plain, with_ctx, with_both, with_kwargs, sync_fn)
    }
    assert specs["plain"] is not None and not specs["plain"].accepts_context
    assert specs["with_ctx"] is not None and specs["with_ctx"].accepts_context
    assert specs["with_both"] is not None and specs["with_both"].accepts_resources
    assert specs["with_kwargs"] is not None and specs["with_kwargs"].accepts_context
    assert specs["sync_fn"] is not None and specs["sync_fn"].kind == "sync"
    obj_spec = Step(name="o", agent=Obj()).spec
    assert obj_spec is not None and obj_spec.accepts_resources and not obj_spec.accepts_context


def test_bad_runner_executor_is_refused_at_build() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo: executor must implement the Executor protocol \(async submit, aclose\); "
        r"got 42: it lacks submit, aclose\. Pass e\.g\. executor='process' or ProcessExecutor\(\)\.$",
    ):
        Flujo(Step.from_callable(summarise), executor=42)  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo: executor must be one of \('inline', 'process', 'ray'\) or an executor, "
        r"got 'gpu'\.$",
    ):
        Flujo(Step.from_callable(summarise), executor="gpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "   ", 3])
def test_a_pipeline_name_must_be_a_non_empty_string(name: Any) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=rf"^Pipeline name must be a non-empty string, got {re.escape(repr(name))}; "
        r"pass name='\.\.\.' or leave the default\.$",
    ):
        Pipeline(steps=[Step.from_callable(summarise)], name=name)
