"""copy_context: every field of every kind of attrs context, written past the class's setattr."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import PipelineContext
from flujo_actors.context import context_copier, copy_context


@attrs.frozen
class Frozen:
    initial_prompt: str | None = None
    run_id: str = ""
    notes: list[str] = attrs.Factory(list)


@attrs.define(slots=False)
class WithDict(PipelineContext):
    extra: dict[str, Any] = attrs.Factory(dict)


converted: list[Any] = []


def _convert(value: Any) -> Any:
    converted.append(value)
    return value


@attrs.define
class Checked(PipelineContext):
    count: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    label: str = attrs.field(default="", converter=_convert)


def _shares_no_container(a: Any, b: Any) -> bool:
    if isinstance(a, (dict, list, set)):
        if a is b:
            return False
        if isinstance(a, dict):
            return all(_shares_no_container(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return all(_shares_no_container(x, y) for x, y in zip(a, b, strict=True))
    return True


def test_a_frozen_context_is_copied_field_by_field() -> None:
    ctx = Frozen("p", "r", ["a"])
    copy = copy_context(ctx)
    assert type(copy) is Frozen
    assert copy == ctx
    assert copy.notes is not ctx.notes


def test_a_context_with_an_instance_dict_is_copied() -> None:
    ctx = WithDict("p", "r", extra={"k": [1]})
    copy = copy_context(ctx)
    assert copy == ctx
    assert copy.extra is not ctx.extra and copy.extra["k"] is not ctx.extra["k"]


def test_copying_runs_no_validator_or_converter() -> None:
    ctx = Checked("p", "r", count=3, label="x")
    converted.clear()
    # A value the validator would refuse is copied as it is: copying is not assigning.
    object.__setattr__(ctx, "count", "not an int")
    copy: Any = copy_context(ctx)
    assert copy.count == "not an int" and copy.label == "x"
    assert converted == []


@given(
    scratchpad=st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=8,
        ),
        max_size=5,
    ),
    branches=st.lists(st.text(max_size=5), max_size=4),
)
def test_a_copy_equals_the_context_and_shares_no_mutable_container(
    scratchpad: dict[str, Any], branches: list[str]
) -> None:
    ctx = PipelineContext("p", "r", scratchpad, branches)
    copy = copy_context(ctx)
    assert copy == ctx
    assert _shares_no_container(ctx.scratchpad, copy.scratchpad)
    assert _shares_no_container(ctx.executed_branches, copy.executed_branches)
    copy.scratchpad["new"] = 1
    assert "new" not in ctx.scratchpad or scratchpad.get("new") == ctx.scratchpad["new"]


def test_the_copier_of_a_class_copies_like_copy_context() -> None:
    from flujo_actors.pydantic import PipelineContext as PydanticContext

    for ctx in (
        PipelineContext("p", "r", {"k": [1]}),
        PydanticContext(initial_prompt="p", run_id="r", scratchpad={"k": [1]}),
    ):
        copy = context_copier(type(ctx))(ctx)
        assert type(copy) is type(ctx)
        assert copy == ctx == copy_context(ctx)
        assert copy.scratchpad is not ctx.scratchpad
        assert copy.scratchpad["k"] is not ctx.scratchpad["k"]
