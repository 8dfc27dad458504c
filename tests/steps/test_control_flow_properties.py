"""Property: any tree of control-flow steps over arithmetic agents computes what a plain
sequential Python evaluation of the same tree computes (output, or failure)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import BranchFailureStrategy, Flujo, Pipeline, PipelineContext, Step

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep

M = 97  # keeps every value small


@attrs.frozen
class Leaf:
    """``x -> (a*x + b) % M``; fails when ``fail_mod`` divides ``x``."""

    a: int
    b: int
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
    """Parallel branches, then the sum of their outputs (failed ones count 0 when ignored)."""

    branches: tuple[Node, ...]
    ignore: bool


@attrs.frozen
class Loop:
    """Until ``out % k == 0``; the next input is ``out + iteration`` with the mapper."""

    body: Node
    k: int
    max_loops: int
    mapper: bool


@attrs.frozen
class Cond:
    """Branch on ``x % key_mod``."""

    key_mod: int
    branches: dict[int, Node]
    default: Node | None


@attrs.frozen
class Router:
    """Branch ``i`` runs when ``(x + i) % 2 == 0``; then the sum of the outputs."""

    branches: tuple[Node, ...]


Node: TypeAlias = Leaf | Seq | Nest | Par | Loop | Cond | Router


class Fail(Exception):
    pass


# -- the reference: plain sequential Python ---------------------------------------------


def evaluate(node: Node, x: int) -> int:
    if isinstance(node, Leaf):
        if node.fail_mod is not None and x % node.fail_mod == 0:
            raise Fail
        return (node.a * x + node.b) % M
    if isinstance(node, Seq):
        for child in node.children:
            x = evaluate(child, x)
        return x
    if isinstance(node, Nest):
        return evaluate(node.child, x)
    if isinstance(node, Par):
        total, ok = 0, False
        for branch in node.branches:
            try:
                total += evaluate(branch, x)
                ok = True
            except Fail:
                if not node.ignore:
                    raise
        if not ok:
            raise Fail
        return total % M
    if isinstance(node, Loop):
        data = x
        for iteration in range(1, node.max_loops + 1):
            out = evaluate(node.body, data)
            if out % node.k == 0:
                return out
            data = out + iteration if node.mapper else out
        raise Fail
    if isinstance(node, Cond):
        chosen = node.branches.get(x % node.key_mod, node.default)
        if chosen is None:
            raise Fail
        return evaluate(chosen, x)
    total = 0
    for i, branch in enumerate(node.branches):
        if (x + i) % 2 == 0:
            total += evaluate(branch, x)
    return total % M


# -- the same tree as flujo_actors steps ------------------------------------------------------


def total_of(outputs: dict[str, Any]) -> int:
    return sum(v for v in outputs.values() if isinstance(v, int)) % M


def build(node: Node, names: itertools.count[int]) -> list[AnyStep]:
    n = next(names)
    if isinstance(node, Leaf):
        a, b, fail_mod = node.a, node.b, node.fail_mod

        async def arith(x: int) -> int:
            await trio.lowlevel.checkpoint()
            if fail_mod is not None and x % fail_mod == 0:
                raise ValueError(f"{x} is divisible by {fail_mod}")
            return (a * x + b) % M

        return [Step.from_callable(arith, name=f"leaf{n}", max_retries=0)]
    if isinstance(node, Seq):
        return [s for child in node.children for s in build(child, names)]
    if isinstance(node, Nest):
        pipeline = Pipeline(steps=build(node.child, names))
        return [pipeline.as_step(f"nest{n}", inherit_context=node.inherit)]
    if isinstance(node, Par):
        branches = {f"b{i}": Pipeline(steps=build(b, names)) for i, b in enumerate(node.branches)}
        strategy = BranchFailureStrategy.IGNORE if node.ignore else BranchFailureStrategy.PROPAGATE
        return [
            Step.parallel(f"par{n}", branches, on_branch_failure=strategy),
            Step.from_callable(total_of, name=f"sum{n}"),
        ]
    if isinstance(node, Loop):
        k = node.k
        return [
            Step.loop_until(
                f"loop{n}",
                Pipeline(steps=build(node.body, names)),
                lambda out, ctx: out % k == 0,
                max_loops=node.max_loops,
                iteration_input_mapper=(lambda out, ctx, i: out + i) if node.mapper else None,
            )
        ]
    if isinstance(node, Cond):
        key_mod = node.key_mod
        return [
            Step.branch_on(
                f"cond{n}",
                lambda x, ctx: x % key_mod,
                {key: Pipeline(steps=build(b, names)) for key, b in node.branches.items()},
                default_branch_pipeline=None
                if node.default is None
                else Pipeline(steps=build(node.default, names)),
            )
        ]
    count = len(node.branches)

    def route(x: int) -> list[str]:
        return [f"r{i}" for i in range(count) if (x + i) % 2 == 0]

    branches = {f"r{i}": Pipeline(steps=build(b, names)) for i, b in enumerate(node.branches)}
    return [
        Step.dynamic_parallel_branch(f"router{n}", route, branches),
        Step.from_callable(total_of, name=f"rsum{n}"),
    ]


# -- strategies -----------------------------------------------------------------------------

leaves = st.builds(
    Leaf,
    a=st.integers(1, 5),
    b=st.integers(0, 9),
    fail_mod=st.none() | st.none() | st.integers(5, 13),
)


def compose(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    few = st.lists(children, min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Seq, st.lists(children, min_size=2, max_size=3).map(tuple)),
        st.builds(Nest, children, st.booleans()),
        st.builds(Par, few, st.booleans()),
        st.builds(Loop, children, st.integers(2, 4), st.integers(1, 3), st.booleans()),
        st.builds(
            Cond,
            st.integers(1, 3),
            st.dictionaries(st.integers(0, 2), children, min_size=1, max_size=3),
            st.none() | children,
        ),
        st.builds(Router, few),
    )


trees = st.recursive(leaves, compose, max_leaves=8)


@given(trees, st.integers(0, 60))
def test_a_control_flow_tree_computes_what_sequential_python_computes(tree: Node, x: int) -> None:
    try:
        expected: int | None = evaluate(tree, x)
    except Fail:
        expected = None
    runner = Flujo(Pipeline(steps=build(tree, itertools.count())), context_model=PipelineContext)
    result = trio.run(runner.run_async, x)
    assert result.success is (expected is not None), tree
    if expected is not None:
        assert result.output == expected, tree
    else:
        assert result.output is None
        assert not result.step_history[-1].success
