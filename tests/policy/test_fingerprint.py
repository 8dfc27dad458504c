"""Pipeline fingerprints (pure): stable, structural, and explained when they differ."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import Flujo, InMemoryStateBackend, Pipeline, Step
from flujo_actors.policy import fingerprint as fp
from flujo_actors.policy.fingerprint import agent_identity, first_difference, pipeline_fingerprint

M = __name__


async def one(x: Any) -> Any:
    return x


async def two(x: Any) -> Any:
    return x


class Agent:
    def __init__(self, lang: str) -> None:
        self.lang = lang

    async def run(self, data: Any) -> Any:
        return data

    async def method(self, data: Any) -> Any:
        return data


def make(n: int) -> Any:
    async def inner(x: Any) -> Any:
        return x + n

    return inner


def test_agent_identity_is_module_and_qualname_never_an_address() -> None:
    assert agent_identity(one) == f"{M}:one"
    assert agent_identity(Agent("fr")) == f"{M}:Agent"
    assert agent_identity(Agent("fr").method) == f"{M}:Agent.method"
    assert agent_identity(make(2)) == f"{M}:make.<locals>.inner"
    assert agent_identity(functools.partial(one)) == f"partial({M}:one)"
    assert agent_identity(lambda x: x).endswith(
        ":test_agent_identity_is_module_and_qualname_never_an_address.<locals>.<lambda>"
    )
    assert agent_identity(len) == "builtins:len"
    assert "0x" not in agent_identity(Agent("de"))


def tree(leaf: Any = one, *, branch: str = "b", body_agent: Any = two) -> Pipeline:
    s = Step.from_callable
    return Pipeline(
        steps=[
            s(one, fallback=s(two, name="rescue")),
            Step.parallel("fan", {"a": s(one), branch: s(leaf) >> s(two)}),
            Step.loop_until("loop", s(body_agent), lambda out, ctx: True),
            Step.branch_on("cond", lambda d, c: 1, {1: s(one)}, default_branch_pipeline=s(two)),
            Pipeline(steps=[s(one)], name="inner").as_step("nested"),
        ],
        name="tree",
    )


def test_equal_structures_have_equal_fingerprints() -> None:
    first, second = pipeline_fingerprint(tree()), pipeline_fingerprint(tree())
    assert first == second
    assert first_difference(first, second) is None
    document = json.loads(first)
    assert document["fingerprint"] == fp.FINGERPRINT_VERSION
    assert "0x" not in first  # no memory addresses anywhere


@pytest.mark.parametrize(
    ("changed", "difference"),
    [
        (
            tree(leaf=two),
            f"steps[1].branches['b'].steps[0]: 'one' (agent {M}:one) vs 'two' (agent {M}:two)",
        ),
        (tree(branch="c"), "steps[1].branches: ['a', 'b'] vs ['a', 'c']"),
        (
            tree(body_agent=one),
            f"steps[2].body.steps[0]: 'two' (agent {M}:two) vs 'one' (agent {M}:one)",
        ),
    ],
)
def test_a_difference_is_reported_by_its_path(changed: Pipeline, difference: str) -> None:
    assert first_difference(pipeline_fingerprint(tree()), pipeline_fingerprint(changed)) == (
        difference
    )


def test_fallbacks_kinds_names_and_lengths_are_part_of_the_fingerprint() -> None:
    s = Step.from_callable
    base = pipeline_fingerprint(Pipeline(steps=[s(one, fallback=s(two, name="rescue"))]))
    no_fallback = pipeline_fingerprint(Pipeline(steps=[s(one)]))
    assert first_difference(base, no_fallback) == (
        f"steps[0].fallback: 'rescue' (agent {M}:two) vs nothing"
    )
    other_fallback = pipeline_fingerprint(Pipeline(steps=[s(one, fallback=s(one, name="r2"))]))
    assert first_difference(base, other_fallback) == (
        f"steps[0].fallback: 'rescue' (agent {M}:two) vs 'r2' (agent {M}:one)"
    )
    longer = pipeline_fingerprint(s(one, fallback=s(two, name="rescue")) >> s(two))
    assert first_difference(base, longer) == f"steps[1]: nothing vs 'two' (agent {M}:two)"
    kind = pipeline_fingerprint(Pipeline(steps=[Step.parallel("one", {"x": s(one)})]))
    assert (
        first_difference(no_fallback, kind)
        == f"steps[0]: 'one' (agent {M}:one) vs 'one' (parallel)"
    )
    renamed = pipeline_fingerprint(Pipeline(steps=[s(one)], name="other"))
    assert first_difference(no_fallback, renamed) == "name: 'pipeline' vs 'other'"
    nested = pipeline_fingerprint(Pipeline(steps=[s(one)], name="x").as_step("n") >> s(one))
    nested2 = pipeline_fingerprint(Pipeline(steps=[s(two)], name="x").as_step("n") >> s(one))
    assert first_difference(nested, nested2) == (
        f"steps[0].pipeline.steps[0]: 'one' (agent {M}:one) vs 'two' (agent {M}:two)"
    )


def test_retries_validators_and_agent_state_are_compatible_edits() -> None:
    a = Pipeline(steps=[Step.from_callable(Agent("fr"), name="t", max_retries=0)])
    b = Pipeline(
        steps=[Step.from_callable(Agent("de"), name="t", max_retries=5, validators=[bool])]
    )
    assert pipeline_fingerprint(a) == pipeline_fingerprint(b)


def test_fingerprints_from_another_format_version_are_explained() -> None:
    current = pipeline_fingerprint(tree())
    old = json.dumps({"fingerprint": 0, "pipeline": {}})
    assert first_difference(old, current) == (
        f"fingerprint format 0 vs {fp.FINGERPRINT_VERSION} (stored by another flujo_actors version)"
    )
    assert first_difference("not json", current) == (
        "the stored fingerprint is not valid JSON (the run's record is damaged)"
    )
    damaged = json.dumps({"fingerprint": fp.FINGERPRINT_VERSION, "pipeline": [1]})
    assert first_difference(damaged, current) == (
        "the stored fingerprint is damaged (not a pipeline description)"
    )


names = st.text(alphabet="abcxyz", min_size=1, max_size=3)


@given(st.lists(names, min_size=1, max_size=6), st.data())
def test_renaming_any_step_is_found_at_its_index(step_names: list[str], data: Any) -> None:
    index = data.draw(st.integers(0, len(step_names) - 1))
    renamed = list(step_names)
    renamed[index] = step_names[index] + "_v2"

    def build(ns: list[str]) -> Pipeline:
        return Pipeline(steps=[Step.from_callable(one, name=n) for n in ns])

    found = first_difference(
        pipeline_fingerprint(build(step_names)), pipeline_fingerprint(build(renamed))
    )
    assert found == (
        f"steps[{index}]: {step_names[index]!r} (agent {M}:one) vs "
        f"{renamed[index]!r} (agent {M}:one)"
    )


async def test_the_fingerprint_is_computed_once_per_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = fp.pipeline_fingerprint

    def counting(pipeline: Any) -> str:
        calls.append(pipeline)
        return real(pipeline)

    monkeypatch.setattr(fp, "pipeline_fingerprint", counting)
    runner = Flujo(Step.from_callable(one), state_backend=InMemoryStateBackend())
    for i in range(3):
        await runner.run_async(i, run_id=f"r{i}")
    await runner.resume_async("r0")
    assert len(calls) == 1
