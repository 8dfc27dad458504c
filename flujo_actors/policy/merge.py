"""Context merge strategies for parallel steps (sync, no trio).

A branch's changes are found by comparing its context copy with the values
the main context had when the branches forked (:class:`Fork`), field by field
and, for ``scratchpad``, key by key: linear in branches x fields, never
pairwise between branches. All branches' changes are collected first and
applied afterwards, so a conflict (``ERROR_ON_CONFLICT``) leaves the main
context untouched.

``executed_branches`` is an append-only log kept by the runtime: what each
branch appended is kept, in declaration order, under every strategy that
merges field by field (it never conflicts).
"""

from __future__ import annotations

import reprlib
from collections.abc import Awaitable, Coroutine
from itertools import compress, repeat
from operator import is_not
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..context import context_field_names, copy_value

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "IDENTITY_FIELDS",
    "BranchChanges",
    "Fork",
    "MergeConflict",
    "MergeFold",
    "apply_changes",
    "diff_branch",
    "identity_change",
    "identity_of",
    "merge_branches",
]

_MISSING: Final = object()
#: In a merge plan: the scratchpad key is removed.
_DELETED: Final = object()
#: Fields that identify the run rather than describe its progress: never merged.
IDENTITY_FIELDS: Final = frozenset({"run_id", "initial_prompt"})
#: The identity fields in the order messages name them.
IDENTITY_ORDER: Final = ("run_id", "initial_prompt")
#: Append-only logs: every branch's appends are kept.
LOG_FIELDS: Final = frozenset({"executed_branches"})

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def identity_of(ctx: Any) -> tuple[Any, ...]:
    """The values of ``ctx``'s identity fields (``run_id``, ``initial_prompt``)."""
    # Spelled out (IDENTITY_ORDER's order): checked around every step that sees the context.
    return (getattr(ctx, "run_id", None), getattr(ctx, "initial_prompt", None))


def identity_change(ctx: Any, before: tuple[Any, ...]) -> str | None:
    """``"context.run_id from 'a' to 'b'"`` if an identity field changed since ``before``."""
    if (
        getattr(ctx, "run_id", None) is before[0]
        and getattr(ctx, "initial_prompt", None) is before[1]
    ):
        return None  # the very same values (the usual case): nothing to compare
    for name, old in zip(IDENTITY_ORDER, before, strict=True):
        new = getattr(ctx, name, None)
        if new is not old and new != old:
            return f"context.{name} from {_repr.repr(old)} to {_repr.repr(new)}"
    return None


#: The rule and the fix, for every message refusing a write of an identity field.
IDENTITY_RULE: Final = (
    "run_id and initial_prompt identify the run and cannot be written by steps; "
    "keep the value in another field (or the scratchpad)."
)


def _show(value: Any) -> str:
    return "<deleted>" if value is _DELETED else _repr.repr(value)


class MergeConflict(Exception):
    """Two branches set the same field (or scratchpad key) to different values.

    Raised by ``ERROR_ON_CONFLICT``. ``field`` is the context field,
    ``key`` the scratchpad key (or None), ``branches`` the two branch names
    in declaration order.
    """

    def __init__(
        self, field: str, first: str, second: str, values: tuple[Any, Any], key: Any = None
    ) -> None:
        where = f"field {field!r}" if key is None else f"field {field!r} key {key!r}"
        super().__init__(
            f"merge conflict on {where}: branches {first!r} and {second!r} set it to "
            f"different values ({_show(values[0])} and {_show(values[1])}) "
            "(merge_strategy=ERROR_ON_CONFLICT). Choose another MergeStrategy or let "
            "only one branch write it."
        )
        self.field = field
        self.key = key
        self.branches = (first, second)


@attrs.frozen(slots=True)
class Fork:
    """The main context's values at the moment the branches forked.

    Attributes:
        fields: base values of the mergeable fields (``scratchpad`` excluded
            when it is a dict: it is compared key by key).
        scratchpad: a shallow copy of the base scratchpad, or None.
        sp_keys: its keys, and ``sp_values`` their values, in order.
        names: the mergeable field names (identity fields and fields outside
            ``include`` are left out).
    """

    fields: dict[str, Any]
    scratchpad: dict[str, Any] | None
    names: tuple[str, ...]
    sp_keys: tuple[str, ...] = ()
    sp_values: tuple[Any, ...] = ()

    @classmethod
    def of(cls, ctx: Any, include: frozenset[str] | None = None) -> Fork:
        """Record ``ctx``'s mergeable values (only ``include`` fields, if given)."""
        names = tuple(
            n
            for n in context_field_names(type(ctx))
            if n not in IDENTITY_FIELDS and (include is None or n in include)
        )
        sp = getattr(ctx, "scratchpad", None) if "scratchpad" in names else None
        base_sp = dict(sp) if type(sp) is dict else None
        values = {n: getattr(ctx, n) for n in names if n != "scratchpad" or base_sp is None}
        for n in LOG_FIELDS.intersection(values):
            log = values[n]
            if type(log) is list:
                # The merge appends to the live log: keep the base apart from it.
                values[n] = list(log)
        if base_sp is None:
            return cls(values, None, names)
        return cls(values, base_sp, names, tuple(base_sp), tuple(base_sp.values()))


@attrs.frozen(slots=True)
class BranchChanges:
    """What one branch changed relative to its fork.

    Attributes:
        fields: whole fields set to a new value.
        scratch_set: scratchpad keys added or set to a new value.
        scratch_deleted: scratchpad keys removed.
        appended: for log fields (``executed_branches``), the entries appended.
    """

    fields: dict[str, Any]
    scratch_set: dict[str, Any]
    scratch_deleted: tuple[str, ...]
    appended: dict[str, list[Any]] = attrs.Factory(dict)


def _changed(value: Any, base: Any) -> bool:
    return value is not base and bool(value != base)


def diff_branch(fork: Fork, branch_ctx: Any) -> BranchChanges:
    """The changes a branch made relative to ``fork`` (cost: its fields and scratchpad keys)."""
    return BranchChanges(*_diff(fork, branch_ctx))


def _diff(
    fork: Fork, branch_ctx: Any
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...], dict[str, list[Any]]]:
    # diff_branch's parts, without the record (a fold reads them once per branch).
    changed: dict[str, Any] = {}
    appended: dict[str, list[Any]] = {}
    for name, base in fork.fields.items():
        value = getattr(branch_ctx, name)
        if not _changed(value, base):
            continue
        if (
            name in LOG_FIELDS
            and type(value) is list
            and type(base) is list
            and len(value) > len(base)
            and value[: len(base)] == base
        ):
            appended[name] = value[len(base) :]
        else:
            changed[name] = value
    sets: dict[str, Any] = {}
    deleted: tuple[str, ...] = ()
    base_sp = fork.scratchpad
    if base_sp is not None:
        sp = branch_ctx.scratchpad
        if type(sp) is not dict:
            # The branch replaced the scratchpad with something else: a whole-field change.
            changed["scratchpad"] = sp
        else:
            sets, deleted = _diff_scratchpad(fork, base_sp, sp)
    return changed, sets, deleted, appended


def apply_changes(ctx: Any, changes: BranchChanges) -> None:
    """Apply recorded changes to ``ctx`` (what a cache hit replays of its miss).

    Whole fields are set, scratchpad keys set or removed, and log entries
    appended, all with the values given (the caller passes fresh ones).
    """
    setter = object.__setattr__
    for field, value in changes.fields.items():
        setter(ctx, field, value)
    if changes.scratch_set or changes.scratch_deleted:
        sp = ctx.scratchpad
        for key in changes.scratch_deleted:
            sp.pop(key, None)
        sp.update(changes.scratch_set)
    for field, tail in changes.appended.items():
        setter(ctx, field, [*getattr(ctx, field), *tail])


def _diff_scratchpad(
    fork: Fork, base_sp: dict[str, Any], sp: dict[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(keys set, keys deleted) of a branch's scratchpad against the base.

    A branch's copy shares the immutable values it did not touch with the
    base, so the identity test below (run in C by ``map``/``compress``) clears
    most unchanged keys; only the remaining candidates (mutable values, which
    are copies, and real changes) are compared with ``!=`` in Python.
    """
    keys = fork.sp_keys
    if not keys:
        return dict(sp), ()  # an empty base (the common fan-out): every key is new
    base_vals = fork.sp_values
    vals = list(map(sp.get, keys, repeat(_MISSING)))
    sets: dict[str, Any] = {}
    deleted: list[str] = []
    for i in compress(range(len(keys)), map(is_not, vals, base_vals)):
        v = vals[i]
        if v is _MISSING:
            deleted.append(keys[i])
        elif v != base_vals[i]:
            sets[keys[i]] = v
    new = len(sp) - (len(keys) - len(deleted))
    if new:
        # New keys were inserted after the copied ones: walk from the end until all are found.
        found: list[str] = []
        for k in reversed(sp):
            if k not in base_sp:
                found.append(k)
                if len(found) == new:
                    break
        for k in reversed(found):
            sets[k] = sp[k]
    return sets, tuple(deleted)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a is _DELETED or b is _DELETED:
        return False
    return not _changed(a, b)


def _decide(
    owners: dict[Any, tuple[str, Any]],
    key: Any,
    branch: str,
    value: Any,
    mode: str,
    field: str,
    is_key: bool,
) -> None:
    prev = owners.get(key)
    if prev is None:
        owners[key] = (branch, value)
        return
    if mode == "keep_first":
        return
    if mode == "error_on_conflict" and not _same(prev[1], value):
        if is_key:
            raise MergeConflict(field, prev[0], branch, (prev[1], value), key)
        raise MergeConflict(field, prev[0], branch, (prev[1], value))
    owners[key] = (branch, value)  # later-declared wins


def merge_branches(
    main: Any,
    fork: Fork,
    branches: Sequence[tuple[str, Any]],
    strategy: str | Callable[[Any, Any], Any],
) -> None:
    """Fold successful branches' contexts into ``main``, in declaration order.

    Args:
        main: the context the branches forked from (mutated in place).
        fork: ``Fork.of(main, include)`` taken before the branches ran.
        branches: ``(branch name, branch context)`` of the successful branches,
            in declaration order.
        strategy: a MergeStrategy value (``"context_update"``,
            ``"error_on_conflict"``, ``"keep_first"``, ``"overwrite"``,
            ``"no_merge"``) or a callable ``(main, branch_ctx) -> None`` called
            once per branch.

    ``context_update`` applies every changed field and scratchpad key; when
    two branches change the same one, the later-declared branch wins.
    ``keep_first`` keeps the earliest branch's value instead, and
    ``error_on_conflict`` raises when the values differ (branches setting the
    same value do not conflict). Merged values are copied, so ``main`` shares
    no mutable object with a branch's context.

    Raises:
        MergeConflict: with ``"error_on_conflict"``; ``main`` is then unchanged.
        ValueError: ``strategy`` is not one of the above.
    """
    if strategy == "no_merge" or not branches:
        return
    fold = MergeFold(main, fork, strategy)
    for name, ctx in branches:
        fold.add(name, ctx)
    fold.apply()


class MergeFold:
    """:func:`merge_branches` one branch at a time, for fan-outs whose branches finish over time.

    :meth:`add` each successful branch in declaration order as soon as it is
    known (a map step adds its items as they complete, and then drops their
    contexts), then :meth:`apply` once. A field-by-field strategy keeps only
    the winning value per changed field and scratchpad key (``overwrite``
    only the last branch's context), so memory grows with what changed, not
    with the number of branches; ``main`` is untouched until :meth:`apply`.
    A callable strategy is called on ``main`` by :meth:`add` itself, so its
    caller must not copy branch contexts from ``main`` after the first add.
    """

    __slots__ = ("_fields", "_keys", "_last", "_logs", "fork", "main", "strategy")

    def __init__(self, main: Any, fork: Fork, strategy: str | Callable[[Any, Any], Any]) -> None:
        if not callable(strategy) and strategy not in (
            "context_update",
            "keep_first",
            "error_on_conflict",
            "overwrite",
            "no_merge",
        ):
            raise ValueError(
                f"unknown merge strategy {strategy!r}; expected one of 'context_update', "
                "'error_on_conflict', 'keep_first', 'overwrite', 'no_merge' or a callable."
            )
        self.main = main
        self.fork = fork
        self.strategy = strategy
        self._fields: dict[Any, tuple[str, Any]] = {}
        self._keys: dict[Any, tuple[str, Any]] = {}
        self._logs: dict[str, list[Any]] = {}
        self._last: Any = None

    def add(self, bname: str, ctx: Any) -> None:
        """Fold the next successful branch (declaration order).

        Raises:
            MergeConflict: ``error_on_conflict`` and a value that differs
                from an earlier branch's.
            TypeError: a callable strategy handed back an awaitable.
        """
        strategy = self.strategy
        if strategy == "no_merge":
            return
        if callable(strategy):
            returned = strategy(self.main, ctx)
            if returned is not None and isinstance(returned, Awaitable):
                # A sync wrapper around an async merge: it cannot run here, and
                # must not be left un-awaited.
                if isinstance(returned, Coroutine):
                    returned.close()
                raise TypeError(
                    f"it returned an awaitable ({type(returned).__name__}); merging runs "
                    "synchronously, so merge_strategy must be a plain function that merges "
                    "before it returns"
                )
            return
        if strategy == "overwrite":
            self._last = ctx
            return
        changed, sets, deleted, appended = _diff(self.fork, ctx)
        fields, keys = self._fields, self._keys
        for field, value in changed.items():
            _decide(fields, field, bname, value, strategy, field, False)
        for key, value in sets.items():
            _decide(keys, key, bname, value, strategy, "scratchpad", True)
        for key in deleted:
            _decide(keys, key, bname, _DELETED, strategy, "scratchpad", True)
        for field, tail in appended.items():
            self._logs.setdefault(field, []).extend(tail)

    def apply(self) -> None:
        """Write what the added branches changed onto ``main`` (copies of the values)."""
        main = self.main
        setter = object.__setattr__
        if self.strategy == "overwrite":
            last = self._last
            if last is not None:
                for n in self.fork.names:
                    setter(main, n, copy_value(getattr(last, n)))
            return
        # Nothing is applied before every branch was examined: a conflict changes nothing.
        for field, (_b, value) in self._fields.items():
            setter(main, field, copy_value(value))
        keys = self._keys
        sp = getattr(main, "scratchpad", None) if keys else None
        if type(sp) is dict:
            for key, (_b, value) in keys.items():
                if value is _DELETED:
                    sp.pop(key, None)
                else:
                    sp[key] = copy_value(value)
        for field, tail in self._logs.items():
            current = getattr(main, field)
            setter(main, field, [*current, *copy_value(tail)])
