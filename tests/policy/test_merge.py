"""The context merge policy (pure, no event loop): every strategy, conflicts, linearity."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import PipelineContext
from flujo_actors.context import copy_context
from flujo_actors.policy.merge import (
    BranchChanges,
    Fork,
    MergeConflict,
    diff_branch,
    identity_change,
    identity_of,
    merge_branches,
)


@attrs.define
class Ctx(PipelineContext):
    score: int = 0
    tags: list[str] = attrs.Factory(list)
    note: str | None = None


def make() -> Ctx:
    return Ctx(initial_prompt="p", run_id="r", scratchpad={"keep": 1, "drop": 2})


def branch(main: Ctx, **changes: Any) -> Ctx:
    """A branch's copy of ``main`` with ``changes`` applied (``sp`` updates the scratchpad)."""
    ctx = copy_context(main)
    sp = changes.pop("sp", {})
    for key in changes.pop("sp_del", ()):
        del ctx.scratchpad[key]
    ctx.scratchpad.update(sp)
    for k, v in changes.items():
        setattr(ctx, k, v)
    return ctx


def test_fork_leaves_out_identity_fields_and_keeps_the_scratchpad_apart() -> None:
    main = make()
    fork = Fork.of(main)
    assert fork.names == ("scratchpad", "executed_branches", "score", "tags", "note")
    assert fork.fields == {"executed_branches": [], "score": 0, "tags": [], "note": None}
    assert fork.scratchpad == {"keep": 1, "drop": 2}
    assert fork.scratchpad is not main.scratchpad
    assert Fork.of(main, frozenset({"score", "run_id"})).names == ("score",)


def test_diff_finds_changed_fields_set_keys_deleted_keys_and_log_appends() -> None:
    main = make()
    fork = Fork.of(main)
    b = branch(main, score=3, sp={"new": 1, "keep": 1}, sp_del=["drop"])
    b.executed_branches.append("x")
    assert diff_branch(fork, b) == BranchChanges(
        {"score": 3}, {"new": 1}, ("drop",), {"executed_branches": ["x"]}
    )
    assert diff_branch(fork, copy_context(main)) == BranchChanges({}, {}, (), {})


def test_diff_handles_reinserted_keys_new_key_order_and_identical_values() -> None:
    main = make()
    main.scratchpad.update({"nan": float("nan"), "list": [1]})
    fork = Fork.of(main)
    b = copy_context(main)
    del b.scratchpad["keep"]
    b.scratchpad["keep"] = 1  # re-inserted at the end, same value: not a change
    b.scratchpad["z"] = 1
    b.scratchpad["a"] = 2
    del b.scratchpad["drop"]
    b.scratchpad["list"].append(2)
    assert diff_branch(fork, b) == BranchChanges({}, {"list": [1, 2], "z": 1, "a": 2}, ("drop",))
    assert list(diff_branch(fork, b).scratch_set) == ["list", "z", "a"]


def test_context_update_applies_changed_fields_and_merges_the_scratchpad_by_key() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, score=1, sp={"a": "A"})
    b = branch(main, note="b", sp={"b": "B"}, sp_del=["drop"])
    merge_branches(main, fork, [("a", a), ("b", b)], "context_update")
    assert main.score == 1
    assert main.note == "b"
    assert main.scratchpad == {"keep": 1, "a": "A", "b": "B"}
    assert (main.initial_prompt, main.run_id) == ("p", "r")


def test_context_update_later_declared_branch_wins_for_fields_keys_and_deletions() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, score=1, sp={"k": "a", "drop": "a"})
    b = branch(main, score=2, sp={"k": "b"}, sp_del=["drop"])
    merge_branches(main, fork, [("a", a), ("b", b)], "context_update")
    assert main.score == 2
    assert main.scratchpad == {"keep": 1, "k": "b"}
    # The other way round the set wins over the deletion.
    main = make()
    merge_branches(main, fork, [("b", b), ("a", a)], "context_update")
    assert main.score == 1
    assert main.scratchpad == {"keep": 1, "k": "a", "drop": "a"}


def test_keep_first_keeps_the_earliest_branch_value() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, score=1, sp={"k": "a"})
    b = branch(main, score=2, note="b", sp={"k": "b", "only_b": 1})
    merge_branches(main, fork, [("a", a), ("b", b)], "keep_first")
    assert (main.score, main.note) == (1, "b")
    assert main.scratchpad == {"keep": 1, "drop": 2, "k": "a", "only_b": 1}


def test_error_on_conflict_names_the_field_both_branches_and_changes_nothing() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, note="a", sp={"x": 1})
    b = branch(main, score=1)
    c = branch(main, score=2)
    with pytest.raises(
        MergeConflict,
        match=r"^merge conflict on field 'score': branches 'b' and 'c' set it to different "
        r"values \(1 and 2\) \(merge_strategy=ERROR_ON_CONFLICT\)\. Choose another "
        r"MergeStrategy or let only one branch write it\.$",
    ) as info:
        merge_branches(main, fork, [("a", a), ("b", b), ("c", c)], "error_on_conflict")
    assert info.value.field == "score"
    assert info.value.key is None
    assert info.value.branches == ("b", "c")
    assert main == make()  # 'a' was not applied either


def test_error_on_conflict_on_a_scratchpad_key_and_on_set_versus_delete() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, sp={"k": [1]})
    b = branch(main, sp={"k": [2]})
    with pytest.raises(
        MergeConflict, match=r"^merge conflict on field 'scratchpad' key 'k': "
    ) as info:
        merge_branches(main, fork, [("a", a), ("b", b)], "error_on_conflict")
    assert (info.value.field, info.value.key, info.value.branches) == (
        "scratchpad",
        "k",
        ("a", "b"),
    )
    deleter = branch(main, sp_del=["drop"])
    setter = branch(main, sp={"drop": 3})
    with pytest.raises(
        MergeConflict,
        match=r"^merge conflict on field 'scratchpad' key 'drop': branches 'd' and 's' set it "
        r"to different values \(<deleted> and 3\) ",
    ):
        merge_branches(main, fork, [("d", deleter), ("s", setter)], "error_on_conflict")


def test_error_on_conflict_accepts_equal_values_from_several_branches() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, score=5, tags=["t"], sp={"k": {"v": 1}})
    b = branch(main, score=5, tags=["t"], sp={"k": {"v": 1}})
    merge_branches(main, fork, [("a", a), ("b", b)], "error_on_conflict")
    assert (main.score, main.tags, main.scratchpad["k"]) == (5, ["t"], {"v": 1})


def test_overwrite_takes_the_last_branch_context_whole() -> None:
    main = make()
    fork = Fork.of(main)
    a = branch(main, score=1, note="a", sp={"a": 1})
    b = branch(main, tags=["b"], sp_del=["keep"])
    merge_branches(main, fork, [("a", a), ("b", b)], "overwrite")
    assert (main.score, main.note, main.tags) == (0, None, ["b"])
    assert main.scratchpad == {"drop": 2}
    assert (main.initial_prompt, main.run_id) == ("p", "r")


def test_no_merge_changes_nothing() -> None:
    main = make()
    fork = Fork.of(main)
    merge_branches(main, fork, [("a", branch(main, score=9, sp={"x": 1}))], "no_merge")
    assert main == make()


def test_a_callable_is_called_once_per_branch_in_order() -> None:
    main = make()
    fork = Fork.of(main)
    seen: list[tuple[Ctx, int]] = []

    def fold(into: Ctx, other: Ctx) -> None:
        seen.append((into, other.score))
        into.score += other.score

    merge_branches(main, fork, [("a", branch(main, score=1)), ("b", branch(main, score=10))], fold)
    assert [s for _, s in seen] == [1, 10]
    assert all(into is main for into, _ in seen)
    assert main.score == 11


def test_unknown_strategy_is_refused() -> None:
    main = make()
    with pytest.raises(ValueError, match=r"^unknown merge strategy 'bogus'; expected one of "):
        merge_branches(main, Fork.of(main), [("a", branch(main))], "bogus")


def test_include_keys_limit_what_is_merged() -> None:
    main = make()
    fork = Fork.of(main, frozenset({"score"}))
    b = branch(main, score=4, note="ignored", sp={"ignored": 1})
    merge_branches(main, fork, [("b", b)], "context_update")
    assert (main.score, main.note) == (4, None)
    assert "ignored" not in main.scratchpad


def test_executed_branches_appends_of_every_branch_are_kept_in_order() -> None:
    main = make()
    main.executed_branches.append("before")
    fork = Fork.of(main)
    a = branch(main)
    a.executed_branches += ["a1", "a2"]
    b = branch(main)
    b.executed_branches.append("b1")
    for strategy in ("context_update", "keep_first", "error_on_conflict"):
        main.executed_branches = ["before"]
        merge_branches(main, fork, [("a", a), ("b", b)], strategy)
        assert main.executed_branches == ["before", "a1", "a2", "b1"], strategy


def test_merged_values_share_no_mutable_object_with_the_branch() -> None:
    main = make()
    fork = Fork.of(main)
    b = branch(main, tags=["x"], sp={"list": [1]})
    merge_branches(main, fork, [("b", b)], "context_update")
    main.tags.append("y")
    main.scratchpad["list"].append(2)
    assert b.tags == ["x"]
    assert b.scratchpad["list"] == [1]


# -- properties -----------------------------------------------------------------------

keys = st.sampled_from(["k0", "k1", "k2", "k3"])
values = st.integers(0, 3)
edits = st.fixed_dictionaries(
    {
        "score": st.none() | values,
        "sp": st.dictionaries(keys, values, max_size=3),
        "sp_del": st.lists(st.sampled_from(["keep", "drop"]), unique=True, max_size=2),
    }
)


def apply(main: Ctx, edit: dict[str, Any]) -> Ctx:
    extra = {} if edit["score"] is None else {"score": edit["score"]}
    return branch(main, sp=dict(edit["sp"]), sp_del=list(edit["sp_del"]), **extra)


def expected(branch_edits: list[dict[str, Any]], keep_first: bool) -> tuple[int, dict[str, Any]]:
    """A plain sequential model: walk the branches, last (or first) writer of each key wins."""
    order = list(reversed(branch_edits)) if keep_first else branch_edits
    score, sp = 0, {"keep": 1, "drop": 2}
    written: set[str] = set()
    for edit in order:
        changes: dict[str, Any] = {}
        if edit["score"] is not None and edit["score"] != 0:
            changes["#score"] = edit["score"]
        base = {"keep": 1, "drop": 2}
        after = {k: v for k, v in base.items() if k not in edit["sp_del"]}
        after.update(edit["sp"])
        for k in set(base) | set(after):
            if base.get(k, "missing") != after.get(k, "missing"):
                changes[k] = after.get(k, "deleted")
        for k, v in changes.items():
            if k == "#score":
                score = v
            elif v == "deleted":
                sp.pop(k, None)
            else:
                sp[k] = v
            written.add(k)
    return score, sp


@given(st.lists(edits, min_size=1, max_size=5))
def test_context_update_and_keep_first_match_a_sequential_model(
    branch_edits: list[dict[str, Any]],
) -> None:
    for strategy, keep_first in (("context_update", False), ("keep_first", True)):
        main = make()
        fork = Fork.of(main)
        ctxs = [(f"b{i}", apply(main, e)) for i, e in enumerate(branch_edits)]
        merge_branches(main, fork, ctxs, strategy)
        assert (main.score, main.scratchpad) == expected(branch_edits, keep_first), strategy


@given(st.lists(edits, min_size=1, max_size=5))
def test_error_on_conflict_is_context_update_when_it_does_not_raise(
    branch_edits: list[dict[str, Any]],
) -> None:
    main = make()
    fork = Fork.of(main)
    ctxs = [(f"b{i}", apply(main, e)) for i, e in enumerate(branch_edits)]
    try:
        merge_branches(main, fork, ctxs, "error_on_conflict")
    except MergeConflict as exc:
        assert main == make()
        first, second = exc.branches
        assert first < second
    else:
        assert (main.score, main.scratchpad) == expected(branch_edits, keep_first=False)


def test_merge_work_is_linear_in_branches_times_changed_fields() -> None:
    """Each branch's diff is compared once with the fork, never with other branches."""
    comparisons = 0

    @attrs.define(eq=False)
    class Counted:
        v: int

        def __eq__(self, other: object) -> bool:
            nonlocal comparisons
            comparisons += 1
            return isinstance(other, Counted) and other.v == self.v

        __hash__ = None  # type: ignore[assignment]

    main = make()
    main.scratchpad = {"c": Counted(0)}
    fork = Fork.of(main)
    n = 200
    ctxs = []
    for i in range(n):
        b = copy_context(main)
        b.scratchpad[f"k{i}"] = i
        ctxs.append((f"b{i}", b))
    merge_branches(main, fork, ctxs, "context_update")
    assert comparisons == n  # one comparison of the untouched value per branch
    assert len(main.scratchpad) == n + 1


def test_identity_is_run_id_then_initial_prompt_and_a_change_names_the_field() -> None:
    ctx = PipelineContext("prompt", "run-1")
    before = identity_of(ctx)
    assert before == ("run-1", "prompt")
    assert identity_change(ctx, before) is None
    # An equal value that is another object is no change.
    object.__setattr__(ctx, "run_id", "".join(["run", "-1"]))
    assert identity_change(ctx, before) is None
    object.__setattr__(ctx, "initial_prompt", "other")
    assert identity_change(ctx, before) == "context.initial_prompt from 'prompt' to 'other'"
    object.__setattr__(ctx, "run_id", "run-2")
    assert identity_change(ctx, before) == "context.run_id from 'run-1' to 'run-2'"
