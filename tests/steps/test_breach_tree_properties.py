"""Property: whatever the control-flow tree, its costs and the limit, a run's result keeps
every completed step in the normal tree shape and its costs add up (#6).

Random trees of parallel (PROPAGATE / IGNORE), loop, conditional, router and nested steps
over leaves with random costs, delays and failures run under a random cost limit on a mock
clock. Whether the limit is breached or not:

* every leaf call that returned is in the result exactly once (its usage reached the
  governor, so the tree must show it), and nothing else is;
* every control-flow entry's cost is the sum of its children's, and the top level sums to
  ``total_cost_usd``;
* the top level is a prefix of the pipeline's steps;
* on a breach, the breaching step (named by the error) is the last leaf of the last
  top-level entry, and the total exceeds the limit.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import (
    BranchFailureStrategy,
    Flujo,
    Pipeline,
    PipelineResult,
    Step,
    StepResult,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep

M = 97


@attrs.frozen
class Leaf:
    a: int
    cost: Decimal
    delay: int
    fail_mod: int | None


@attrs.frozen
class Seq:
    children: tuple[Node, ...]


@attrs.frozen
class Nest:
    child: Node
    inherit: bool


@attrs.frozen
class Par:
    branches: tuple[Node, ...]
    ignore: bool


@attrs.frozen
class Loop:
    body: Node
    k: int
    max_loops: int


@attrs.frozen
class Cond:
    key_mod: int
    branches: dict[int, Node]
    default: Node | None


@attrs.frozen
class Router:
    branches: tuple[Node, ...]


Node: TypeAlias = Leaf | Seq | Nest | Par | Loop | Cond | Router


def num(value: Any) -> int:
    """A number out of whatever a step produced (outputs, mappings of branch outputs)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, UsageOutput):
        return num(value.value)
    if isinstance(value, dict):
        return sum(num(v) for v in value.values()) % M
    return 0


def build(node: Node, names: itertools.count[int], log: list[str]) -> list[AnyStep]:
    n = next(names)
    if isinstance(node, Leaf):
        name = f"leaf{n}"
        a, cost, delay, fail_mod = node.a, node.cost, node.delay, node.fail_mod

        async def leaf(data: Any) -> UsageOutput:
            await trio.sleep(delay)
            x = num(data)
            if fail_mod is not None and x % fail_mod == 0:
                raise ValueError(f"{x} is divisible by {fail_mod}")
            log.append(name)  # returned: its usage reaches the governor
            return UsageOutput((a * x + 1) % M, cost)

        return [Step.from_callable(leaf, name=name, max_retries=0)]
    if isinstance(node, Seq):
        return [s for child in node.children for s in build(child, names, log)]
    if isinstance(node, Nest):
        pipeline = Pipeline(steps=build(node.child, names, log))
        return [pipeline.as_step(f"nest{n}", inherit_context=node.inherit)]
    if isinstance(node, Par):
        branches = {
            f"b{i}": Pipeline(steps=build(b, names, log)) for i, b in enumerate(node.branches)
        }
        strategy = BranchFailureStrategy.IGNORE if node.ignore else BranchFailureStrategy.PROPAGATE
        return [Step.parallel(f"par{n}", branches, on_branch_failure=strategy)]
    if isinstance(node, Loop):
        k = node.k
        return [
            Step.loop_until(
                f"loop{n}",
                Pipeline(steps=build(node.body, names, log)),
                lambda out, ctx: num(out) % k == 0,
                max_loops=node.max_loops,
            )
        ]
    if isinstance(node, Cond):
        key_mod = node.key_mod
        return [
            Step.branch_on(
                f"cond{n}",
                lambda x, ctx: num(x) % key_mod,
                {key: Pipeline(steps=build(b, names, log)) for key, b in node.branches.items()},
                default_branch_pipeline=None
                if node.default is None
                else Pipeline(steps=build(node.default, names, log)),
            )
        ]
    count = len(node.branches)

    def route(x: Any) -> list[str]:
        return [f"r{i}" for i in range(count) if (num(x) + i) % 2 == 0]

    branches = {f"r{i}": Pipeline(steps=build(b, names, log)) for i, b in enumerate(node.branches)}
    return [Step.dynamic_parallel_branch(f"router{n}", route, branches)]


costs = st.sampled_from([Decimal(0), Decimal("0.1"), Decimal("0.25"), Decimal("0.4")])
leaves = st.builds(
    Leaf,
    a=st.integers(1, 5),
    cost=costs,
    delay=st.integers(0, 3),
    fail_mod=st.none() | st.none() | st.none() | st.integers(5, 13),
)


def compose(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    few = st.lists(children, min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Seq, st.lists(children, min_size=2, max_size=3).map(tuple)),
        st.builds(Nest, children, st.booleans()),
        st.builds(Par, few, st.booleans()),
        st.builds(Loop, children, st.integers(2, 4), st.integers(1, 3)),
        st.builds(
            Cond,
            st.integers(1, 3),
            st.dictionaries(st.integers(0, 2), children, min_size=1, max_size=3),
            st.none() | children,
        ),
        st.builds(Router, few),
    )


trees = st.recursive(leaves, compose, max_leaves=8)
limits = st.sampled_from(["0.05", "0.3", "0.5", "0.75", "1.0", "1.5", "2.5"]).map(Decimal)


def all_results(history: list[StepResult]) -> list[StepResult]:
    out: list[StepResult] = []
    stack = list(history)
    while stack:
        r = stack.pop()
        out.append(r)
        stack.extend(r.step_history)
    return out


def last_leaf(history: list[StepResult]) -> StepResult:
    r = history[-1]
    while r.step_history:
        r = r.step_history[-1]
    return r


async def _run(runner: Flujo, x: int) -> PipelineResult | UsageLimitExceededError:
    try:
        return await runner.run_async(x)
    except UsageLimitExceededError as err:
        return err


@given(trees, st.integers(0, 60), limits)
def test_every_completed_step_is_in_the_tree_and_the_costs_add_up(
    tree: Node, x: int, limit: Decimal
) -> None:
    log: list[str] = []
    steps = build(tree, itertools.count(), log)
    runner = Flujo(Pipeline(steps=steps), usage_limits=UsageLimits(total_cost_usd_limit=limit))
    outcome = trio.run(
        functools.partial(_run, runner, x), clock=trio.testing.MockClock(autojump_threshold=0)
    )
    result = outcome.result if isinstance(outcome, UsageLimitExceededError) else outcome
    assert result is not None
    history = result.step_history
    everything = all_results(history)

    # Every leaf call that returned is in the tree exactly once, and nothing else is.
    returned = Counter(r.name for r in everything if r.name.startswith("leaf") and r.success)
    assert returned == Counter(log), tree

    # Costs add up at every level.
    for r in everything:
        if r.step_history:
            assert r.cost_usd == sum((c.cost_usd for c in r.step_history), Decimal(0)), (tree, r)
    assert result.total_cost_usd == sum((r.cost_usd for r in history), Decimal(0)), tree

    # The normal shape: the top level is a prefix of the pipeline's steps.
    assert [r.name for r in history] == [s.name for s in steps][: len(history)], tree

    if isinstance(outcome, UsageLimitExceededError):
        assert result.total_cost_usd > limit
        found = re.match(r"^Usage limit exceeded after step '([^']+)': ", str(outcome))
        assert found is not None
        leaf = last_leaf(history)
        assert (leaf.name, leaf.success) == (found.group(1), True), tree
        assert leaf.cost_usd > 0
    else:
        assert result.total_cost_usd <= limit
