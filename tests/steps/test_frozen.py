"""Built definitions are immutable, and every nested level is cancellable.

``p.steps.append(p.as_step("again"))`` after ``Flujo(p)`` used to make a
recursive pipeline that started actors without end, uncancellably. Now
steps, their configs and pipelines are sealed once built (``Pipeline.steps``
is a tuple, branch maps are read-only, ``>>`` builds new pipelines); the
runner still refuses a cycle forced past the seal; and each nested level
checks for cancellation before it starts its first step.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from flujo_actors import (
    Flujo,
    Pipeline,
    PipelineDefinitionError,
    Step,
    StepConfig,
)

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep


async def echo(data: Any) -> Any:
    return data


def _refused(owner: str, attr: str) -> str:
    return (
        "^"
        + re.escape(
            f"{owner} cannot be changed once built (tried to set {attr!r}): a pipeline that "
            "was validated must stay valid. Build a new one instead, e.g. "
            f"attrs.evolve(step, {attr}=...) or Step.from_callable(..., {attr}=...)."
        )
        + "$"
    )


def test_pipeline_steps_are_a_tuple_and_cannot_grow() -> None:
    p = Pipeline(steps=[Step.from_callable(echo)])
    runner = Flujo(p)
    assert isinstance(p.steps, tuple)
    with pytest.raises(AttributeError):
        p.steps.append(p.as_step("again"))  # type: ignore[attr-defined]
    with pytest.raises(PipelineDefinitionError, match=_refused("Pipeline 'pipeline'", "steps")):
        p.steps = (*p.steps, p.as_step("again"))
    with pytest.raises(PipelineDefinitionError, match=_refused("Pipeline 'pipeline'", "name")):
        p.name = "other"
    assert runner.run("x").output == "x"


def test_chaining_builds_new_pipelines_and_leaves_the_old_one_alone() -> None:
    a, b = Step.from_callable(echo, name="a"), Step.from_callable(echo, name="b")
    p = Pipeline.from_step(a)
    q = p >> b
    assert [s.name for s in q.steps] == ["a", "b"]
    assert p.steps == (a,)


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("fallback", None),
        ("validators", ()),
        ("config", StepConfig()),
        ("agent", echo),
        ("cache", True),
        ("name", "other"),
    ],
)
def test_a_built_step_refuses_every_assignment(attr: str, value: Any) -> None:
    s = Step.from_callable(echo, name="s")
    with pytest.raises(PipelineDefinitionError, match=_refused("Step 's'", attr)):
        setattr(s, attr, value)


def test_a_step_config_is_frozen_too() -> None:
    cfg = StepConfig(max_retries=2)
    with pytest.raises(PipelineDefinitionError, match=_refused("A StepConfig", "max_retries")):
        cfg.max_retries = -1
    assert cfg.max_retries == 2


def test_control_flow_steps_are_sealed_and_their_branches_read_only() -> None:
    body = Pipeline.from_step(Step.from_callable(echo))
    par = Step.parallel("par", {"a": body})
    loop = Step.loop_until("loop", body, lambda o, c: True)
    cond = Step.branch_on("cond", lambda d, c: "a", {"a": body})
    nested = body.as_step("nested")
    with pytest.raises(PipelineDefinitionError, match=_refused("Step 'loop'", "body")):
        loop.body = Pipeline.from_step(loop)
    with pytest.raises(PipelineDefinitionError, match=_refused("Step 'nested'", "pipeline")):
        nested.pipeline = Pipeline.from_step(nested)
    with pytest.raises(PipelineDefinitionError, match=_refused("Step 'par'", "branches")):
        par.branches = {}
    for step in (par, cond):
        with pytest.raises(
            PipelineDefinitionError,
            match=rf"^Step '{step.name}': branches cannot be changed once built; build a new "
            r"step with the branches you want\.$",
        ):
            step.branches["again"] = Pipeline.from_step(step)  # type: ignore[index]
    assert list(par.branches) == ["a"]
    assert par.branches == {"a": body}


def test_attrs_evolve_builds_a_changed_copy_that_is_validated_again() -> None:
    s = Step.from_callable(echo, name="s")
    t = attrs.evolve(s, name="t", cache=True)
    assert (t.name, t.cache, s.name, s.cache) == ("t", True, "s", False)
    assert t.spec is not None and t.spec.label == "echo"
    with pytest.raises(
        PipelineDefinitionError, match=r"^Step 's': cache must be True or False, got 'yes'\.$"
    ):
        attrs.evolve(s, cache="yes")  # type: ignore[arg-type]
    par = Step.parallel("par", {"a": s})
    copy = attrs.evolve(par, name="p2")
    assert copy.name == "p2" and list(copy.branches) == ["a"]
    assert copy.branches["a"].steps == (s,)


@pytest.mark.parametrize("where", ["as_step", "loop", "parallel", "conditional", "router"])
def test_a_cycle_forced_past_the_seal_is_still_refused_with_its_path(where: str) -> None:
    p = Pipeline(steps=[Step.from_callable(echo, name="first")])
    wrapped: AnyStep
    if where == "as_step":
        wrapped = p.as_step("again")
        at = "pipeline/again"
    elif where == "loop":
        wrapped = Step.loop_until("again", p, lambda o, c: True)
        at = "pipeline/again"
    elif where == "parallel":
        wrapped = Step.parallel("again", {"b": p})
        at = "pipeline/again/b"
    elif where == "conditional":
        wrapped = Step.branch_on("again", lambda d, c: "k", {"k": p})
        at = "pipeline/again/k"
    else:
        wrapped = Step.dynamic_parallel_branch("again", lambda d: ["b"], {"b": p})
        at = "pipeline/again/b"
    object.__setattr__(p, "steps", (*p.steps, wrapped))  # what the seal prevents
    with pytest.raises(
        PipelineDefinitionError,
        match=rf"^Pipeline 'pipeline' contains itself \(at {at}\); a pipeline tree must not "
        r"be recursive\.$",
    ):
        Flujo(p)


def _nest(kind: str, inner: AnyStep) -> AnyStep:
    body = Pipeline.from_step(inner)
    if kind == "as_step":
        return body.as_step("nested")
    if kind == "loop":
        return Step.loop_until("nested", body, lambda o, c: True)
    if kind == "parallel":
        return Step.parallel("nested", {"b": body})
    if kind == "conditional":
        return Step.branch_on("nested", lambda d, c: "k", {"k": body})
    return Step.dynamic_parallel_branch("nested", lambda d: ["b"], {"b": body})


@pytest.mark.parametrize("kind", ["as_step", "loop", "parallel", "conditional", "router"])
async def test_a_cancelled_run_starts_no_nested_level(kind: str) -> None:
    ran: list[str] = []

    def inner(data: str) -> str:  # sync: it has no checkpoint of its own
        ran.append(data)
        return data

    with trio.CancelScope() as scope:

        def cancel(data: str) -> str:
            scope.cancel()
            return data

        pipeline = Step.from_callable(cancel) >> _nest(kind, Step.from_callable(inner))
        await Flujo(pipeline).run_async("x")
    assert scope.cancelled_caught
    assert ran == []


async def test_a_deep_nesting_of_sync_steps_stops_at_once_when_cancelled() -> None:
    ran: list[int] = []

    def count(data: int) -> int:
        ran.append(data)
        return data + 1

    step: AnyStep = Step.from_callable(count, name="leaf")
    for depth in range(50):
        step = (Step.from_callable(count, name=f"c{depth}") >> step).as_step(f"level{depth}")
    with trio.CancelScope() as scope:

        def cancel(data: int) -> int:
            scope.cancel()
            return data

        await Flujo(Step.from_callable(cancel) >> step).run_async(0)
    assert scope.cancelled_caught
    assert ran == []


async def test_a_long_chain_of_sync_steps_stops_at_once_when_cancelled() -> None:
    ran: list[int] = []

    def count(data: int) -> int:
        ran.append(data)
        return data + 1

    with trio.CancelScope() as scope:

        def cancel(data: int) -> int:
            scope.cancel()
            return data

        steps = [Step.from_callable(count, name=f"s{i}") for i in range(20)]
        await Flujo(Pipeline(steps=[Step.from_callable(cancel), *steps])).run_async(0)
    assert scope.cancelled_caught
    assert ran == []


_CHILDREN = {
    "as_step": ("pipeline",),
    "loop": ("body",),
    "parallel": ("branches",),
    "conditional": ("branches", "default_branch"),
    "router": ("branches", "router"),
}


@pytest.mark.parametrize("kind", list(_CHILDREN))
async def test_no_assignment_can_make_a_pipeline_contain_itself(kind: str) -> None:
    leaf = Step.from_callable(echo, name="leaf")
    outer = _nest(kind, leaf)
    inner = Pipeline.from_step(outer)  # what a recursive tree would put back inside
    for attr in _CHILDREN[kind]:
        with pytest.raises(PipelineDefinitionError, match=_refused("Step 'nested'", attr)):
            setattr(outer, attr, inner)
        with pytest.raises(PipelineDefinitionError, match=_refused("Step 'nested'", attr)):
            delattr(outer, attr)
    branches = getattr(outer, "branches", None)
    if branches is not None:
        with pytest.raises(PipelineDefinitionError, match=r"^Step 'nested': branches cannot"):
            branches["b"] = inner
    with pytest.raises(PipelineDefinitionError, match=_refused("Step 'leaf'", "fallback")):
        leaf.fallback = outer
    with pytest.raises(PipelineDefinitionError, match=_refused("Pipeline 'pipeline'", "steps")):
        inner.steps = (outer, *inner.steps)
    # attrs.evolve builds a new definition: it cannot refer to itself either.
    again = attrs.evolve(outer, name="again")
    assert again is not outer and again.name == "again"
    # Nothing changed: the tree is finite and the run ends.
    result = await Flujo(inner).run_async("x")
    assert result.success
