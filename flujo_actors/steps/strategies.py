"""Merge and failure strategies of parallel steps, and the checks of their options."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import attrs

from ..errors import PipelineDefinitionError
from .callables import check_positional, looks_async, refuse_class

__all__ = [
    "BranchFailureStrategy",
    "MergeSpec",
    "MergeStrategy",
    "PluginOutcome",
    "check_branch_names",
    "check_merge",
    "include_keys",
]


class MergeStrategy(enum.Enum):
    """How a parallel step folds its branches' contexts back into the main one."""

    NO_MERGE = "no_merge"
    OVERWRITE = "overwrite"
    CONTEXT_UPDATE = "context_update"
    ERROR_ON_CONFLICT = "error_on_conflict"
    KEEP_FIRST = "keep_first"


class BranchFailureStrategy(enum.Enum):
    """What a failing parallel branch does to its step."""

    PROPAGATE = "propagate"
    IGNORE = "ignore"


MergeSpec: TypeAlias = MergeStrategy | Callable[[Any, Any], None]


@attrs.define
class PluginOutcome:
    """A plugin's verdict on an output; ``new_solution`` (if not None) replaces it."""

    success: bool
    feedback: str | None = None
    new_solution: Any = None


def _enum_arg(enum_cls: Any, value: Any, owner: str, arg: str) -> Any:
    """``value`` as a member of ``enum_cls``; its value string (any case) is accepted too."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls(value.lower())
        except ValueError:
            pass
    choices = ", ".join(f"{enum_cls.__name__}.{m.name}" for m in enum_cls)
    return PipelineDefinitionError(
        f"Step {owner!r}: {arg} must be a {enum_cls.__name__} ({choices})"
        + (" or a callable (main_ctx, branch_ctx) -> None" if enum_cls is MergeStrategy else "")
        + f", got {value!r}."
    )


def check_merge(
    owner: str, merge: Any, failure: Any, *, failure_arg: str = "on_branch_failure"
) -> tuple[MergeSpec, BranchFailureStrategy]:
    """Validate (and normalise) ``merge_strategy`` and ``on_branch_failure`` (or ``failure_arg``)."""
    if callable(merge) and not isinstance(merge, (str, MergeStrategy)):
        if looks_async(merge):
            raise PipelineDefinitionError(
                f"Step {owner!r}: merge_strategy must be a plain function "
                f"(main_ctx, branch_ctx) -> None, got the async function {merge!r}; "
                "merging runs synchronously, so drop `async`."
            )
        refuse_class(owner, "merge_strategy", merge, ("__call__",))
        check_positional(owner, "merge_strategy", merge, 2, "(main_ctx, branch_ctx)")
        m: Any = merge
    else:
        m = _enum_arg(MergeStrategy, merge, owner, "merge_strategy")
    f = _enum_arg(BranchFailureStrategy, failure, owner, failure_arg)
    for value in (m, f):
        if isinstance(value, PipelineDefinitionError):
            raise value
    return m, f


def include_keys(owner: str, keys: Any) -> frozenset[str] | None:
    """Validate ``context_include_keys``: None or an iterable of field names."""
    if keys is None:
        return None
    if isinstance(keys, str):
        raise PipelineDefinitionError(
            f"Step {owner!r}: context_include_keys must be a list of field "
            f"names, got the string {keys!r}; write [{keys!r}]."
        )
    try:
        names = frozenset(keys)
    except TypeError:
        raise PipelineDefinitionError(
            f"Step {owner!r}: context_include_keys must be a list of context field "
            f"names or None, got {keys!r}."
        ) from None
    bad = sorted(repr(k) for k in names if not isinstance(k, str) or not k)
    if bad:
        raise PipelineDefinitionError(
            f"Step {owner!r}: context_include_keys must hold context field names "
            f"(non-empty strings), got {', '.join(bad)}."
        )
    return names


def check_branch_names(owner: str, branches: Mapping[Any, Any]) -> None:
    for k in branches:
        if not isinstance(k, str) or not k:
            raise PipelineDefinitionError(
                f"Step {owner!r}: branch names must be non-empty strings, got {k!r}."
            )
