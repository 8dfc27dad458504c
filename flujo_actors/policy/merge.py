"""Context merge strategies for parallel steps (sync, no trio).

A branch's changes are found by comparing its context copy with the values
the main context had when the branches forked (``Fork``), field by field and,
for ``scratchpad``, key by key: linear in branches x fields, never pairwise
between branches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..context import context_field_names

__all__ = ["BranchChanges", "Fork", "MergeConflict", "diff_branch", "merge_branches"]

_MISSING = object()
# Fields that identify the run rather than describe its progress: never merged.
_IDENTITY_FIELDS = frozenset({"run_id", "initial_prompt"})


class MergeConflict(Exception):
    """Two branches set the same field to different values (ERROR_ON_CONFLICT)."""

    def __init__(self, field: str, first: str, second: str) -> None:
        super().__init__(
            f"merge conflict on field {field!r}: branches {first!r} and {second!r} "
            "set it to different values (merge_strategy=ERROR_ON_CONFLICT). Choose "
            "another MergeStrategy or let only one branch write the field."
        )
        self.field = field
        self.branches = (first, second)


@attrs.frozen(slots=True)
class Fork:
    """The main context's values at the moment the branches forked."""

    fields: dict[str, Any]
    scratchpad: dict[str, Any] | None
    names: tuple[str, ...]

    @classmethod
    def of(cls, ctx: Any, include: frozenset[str] | None = None) -> Fork:
        names = tuple(
            n
            for n in context_field_names(type(ctx))
            if n not in _IDENTITY_FIELDS and (include is None or n in include)
        )
        values = {n: getattr(ctx, n) for n in names if n != "scratchpad"}
        sp = getattr(ctx, "scratchpad", None) if "scratchpad" in names else None
        return cls(values, dict(sp) if isinstance(sp, dict) else None, names)


@attrs.frozen(slots=True)
class BranchChanges:
    """What one branch changed: whole fields, and scratchpad keys set or deleted."""

    fields: dict[str, Any]
    scratch_set: dict[str, Any]
    scratch_deleted: tuple[str, ...]


def diff_branch(fork: Fork, branch_ctx: Any) -> BranchChanges:
    """The changes a branch made relative to ``fork``."""
    changed: dict[str, Any] = {}
    for name, base in fork.fields.items():
        value = getattr(branch_ctx, name)
        if value is not base and value != base:
            changed[name] = value
    sets: dict[str, Any] = {}
    deleted: tuple[str, ...] = ()
    if fork.scratchpad is not None:
        base_sp = fork.scratchpad
        sp = branch_ctx.scratchpad
        for k, v in sp.items():
            b = base_sp.get(k, _MISSING)
            if b is _MISSING or (v is not b and v != b):
                sets[k] = v
        if len(sp) < len(base_sp) or any(k not in sp for k in base_sp):
            deleted = tuple(k for k in base_sp if k not in sp)
    return BranchChanges(changed, sets, deleted)


def merge_branches(
    main: Any,
    fork: Fork,
    branches: Sequence[tuple[str, Any]],
    strategy: str | Callable[[Any, Any], None],
) -> None:
    """Fold successful branches' contexts into ``main`` (declaration order).

    ``strategy`` is a MergeStrategy value string (``"context_update"``,
    ``"error_on_conflict"``, ``"keep_first"``, ``"overwrite"``, ``"no_merge"``)
    or a callable ``(main, branch_ctx) -> None``.

    Raises:
        MergeConflict: with ``"error_on_conflict"``, naming the field and branches.
    """
    if strategy == "no_merge" or not branches:
        return
    if callable(strategy):
        for _name, ctx in branches:
            strategy(main, ctx)
        return
    setter = object.__setattr__
    if strategy == "overwrite":
        _name, last = branches[-1]
        for n in fork.names:
            setter(main, n, getattr(last, n))
        return
    keep_first = strategy == "keep_first"
    conflict = strategy == "error_on_conflict"
    owner: dict[str, tuple[str, Any]] = {}
    sp_owner: dict[str, tuple[str, Any]] = {}
    sp = getattr(main, "scratchpad", None)
    for bname, ctx in branches:
        ch = diff_branch(fork, ctx)
        for field, value in ch.fields.items():
            prev = owner.get(field)
            if prev is not None:
                if conflict and prev[1] != value:
                    raise MergeConflict(field, prev[0], bname)
                if keep_first:
                    continue
            owner[field] = (bname, value)
            setter(main, field, value)
        if sp is None:
            continue
        for key, value in ch.scratch_set.items():
            prev = sp_owner.get(key)
            if prev is not None:
                if conflict and prev[1] != value:
                    raise MergeConflict(f"scratchpad[{key!r}]", prev[0], bname)
                if keep_first:
                    continue
            sp_owner[key] = (bname, value)
            sp[key] = value
        for key in ch.scratch_deleted:
            if key not in sp_owner:
                sp.pop(key, None)
