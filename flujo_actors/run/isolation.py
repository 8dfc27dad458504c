"""Attempt isolation: what attempts may share, pristine inputs, context snapshots.

Every retried (or fallen-back) attempt gets its own copy of a mutable input
and starts from the context as it was before the step; these are the cheap
copies that make that so (one C-level dump, never a deep copy of the world).
"""

from __future__ import annotations

import dataclasses
import enum
import marshal
import pickle
from decimal import Decimal
from typing import Any, Final

import attrs

from ..context import context_field_names, copy_value
from ..policy.merge import identity_of

__all__ = [
    "IMMUTABLE_INPUT",
    "ContextSnapshot",
    "Pristine",
    "fork_start",
    "immutable",
    "start_snapshot",
]

IMMUTABLE_INPUT: Final[frozenset[type]] = frozenset(
    {int, str, float, bool, type(None), bytes, Decimal, frozenset}
)

# Frozen attrs classes / frozen dataclasses -> their field names; None: mutable.
_FROZEN_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _frozen_fields(t: type) -> tuple[str, ...] | None:
    try:
        return _FROZEN_FIELDS[t]
    except KeyError:
        pass
    names: tuple[str, ...] | None = None
    if attrs.has(t):
        # attrs has no public "is frozen" flag; its frozen classes install this setter.
        if getattr(t.__setattr__, "__name__", "") == "_frozen_setattrs":
            names = tuple(f.name for f in attrs.fields(t))
    elif dataclasses.is_dataclass(t) and t.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        names = tuple(f.name for f in dataclasses.fields(t))
    _FROZEN_FIELDS[t] = names
    return names


def immutable(value: Any, depth: int = 0) -> bool:
    """Whether no attempt can mutate ``value`` (so attempts may share it)."""
    t = type(value)
    if t in IMMUTABLE_INPUT:
        return True
    if depth > 4:
        return False
    if t is tuple or t is frozenset:
        items: Any = value
    elif isinstance(value, enum.Enum):
        return True
    else:
        names = _frozen_fields(t)
        if names is None:
            return False
        items = [getattr(value, n) for n in names]
    return all(type(v) in IMMUTABLE_INPUT or immutable(v, depth + 1) for v in items)


class Pristine:
    """A value kept pristine: :meth:`thaw` returns a fresh, isolated copy each time.

    The value is serialized once, in C: ``marshal`` for plain data (dicts,
    lists, str, numbers, ...; it refuses subclasses and other types), else
    ``pickle`` (in-process only, never stored), else a structural copy. A
    snapshot of a large context then costs one C-speed dump per step, not a
    Python-level deep copy, and nothing more unless an attempt fails.

    Raises:
        Exception: the value can be neither serialized nor copied.
    """

    __slots__ = ("blob", "how")

    def __init__(self, value: Any) -> None:
        try:
            self.blob: Any = marshal.dumps(value)
            self.how = 0
            return
        except Exception:  # unmarshallable (a class instance, a subclass, ...)
            pass
        try:
            self.blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            self.how = 1
            return
        except Exception:  # unpicklable (a lambda, a local class, a lock, ...)
            pass
        self.blob = copy_value(value)
        self.how = 2

    def thaw(self) -> Any:
        how = self.how
        if how == 0:
            return marshal.loads(self.blob)
        if how == 1:
            return pickle.loads(self.blob)  # our own bytes, from this process
        return copy_value(self.blob)


class ContextSnapshot:
    """A context's field values before a step, to roll a failed attempt back.

    Immutable field values are kept by reference; the others are kept
    pristine together (one dump). A field whose value can be neither
    serialized nor copied (a lock, a client) is kept by reference: rolling
    back rebinds the field but cannot undo changes made inside that object.
    """

    __slots__ = ("fields", "fixed", "names", "pristine")

    def __init__(self, ctx: Any) -> None:
        fixed: list[tuple[str, Any]] = []
        names: list[str] = []
        values: list[Any] = []
        for name in context_field_names(type(ctx)):
            value = getattr(ctx, name)
            if type(value) in IMMUTABLE_INPUT:
                fixed.append((name, value))
            else:
                names.append(name)
                values.append(value)
        self.fixed = fixed
        self.names = names
        self.fields: list[tuple[str, Pristine]] = []
        try:
            self.pristine: Pristine | None = Pristine(tuple(values))
        except Exception:
            self.pristine = None
            for name, value in zip(names, values, strict=True):
                try:
                    self.fields.append((name, Pristine(value)))
                except Exception:
                    fixed.append((name, value))

    def restore(self, ctx: Any) -> None:
        """Put the snapshot's values back (it stays intact for later attempts)."""
        setter = object.__setattr__
        for name, value in self.fixed:
            setter(ctx, name, value)
        if self.pristine is not None:
            for name, value in zip(self.names, self.pristine.thaw(), strict=True):
                setter(ctx, name, value)
        for name, kept in self.fields:
            setter(ctx, name, kept.thaw())


def fork_start(ctx: Any, run: Any) -> tuple[ContextSnapshot, tuple[Any, ...]] | None:
    """The rollback snapshot and identity every branch of a fan-out starts with, or None.

    A branch starts on a structural copy of ``ctx`` (all fields), so its first
    agent's snapshot would hold the same values as one of ``ctx`` taken before
    any branch ran: taken here once, it replaces one per branch. None when
    something may touch a branch's context before its first step (hooks
    around steps, checkpoint replay), which then snapshots its own copy.
    """
    if run.hooks is not None or run.positions is not None:
        return None
    return ContextSnapshot(ctx), identity_of(ctx)


def start_snapshot(job: Any, ctx: Any) -> tuple[ContextSnapshot, tuple[Any, ...]]:
    """The rollback snapshot and identity of ``ctx`` before an agent step of ``job`` starts.

    The fan-out's shared one (:func:`fork_start`) if this is the job's first
    step, still on the context the job started with; it is taken once, so a
    fallback or a later step snapshots the context as it then is.
    """
    start = getattr(job, "start", None)
    if start is not None:
        job.start = None
        if not job.history and job.context is ctx:
            return start  # type: ignore[no-any-return]
    return ContextSnapshot(ctx), identity_of(ctx)
