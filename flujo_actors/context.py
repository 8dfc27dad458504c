"""The pipeline context: what steps share during a run, and cheap copies of it.

Copies are structural: immutable field values are shared, containers
(dict/list/set) are rebuilt recursively, and only other mutable objects are
deep-copied. That is what a branch or an attempt needs to be isolated, at a
fraction of ``copy.deepcopy`` of the world.

A value that cannot be copied (``copy.deepcopy`` refuses it: a lock, a
socket, an SDK client holding either) is *shared by reference* instead:
every branch and attempt sees the same object, which is what a client or a
lock is for. Such an object is never isolated, so changes made inside it
are seen everywhere and are not rolled back.
"""

from __future__ import annotations

import copy
import keyword
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ._pydantic_compat import field_default, is_pydantic_model, model_field_names
from .errors import PipelineDefinitionError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "PipelineContext",
    "build_context",
    "context_copier",
    "context_field_names",
    "copy_context",
    "copy_value",
    "restore_context",
    "snapshot_context",
]

ContextT = TypeVar("ContextT")


@attrs.define
class PipelineContext:
    """The default run context. Subclass it with ``@attrs.define`` to add fields.

    Only the runner creates a context: ``initial_prompt`` comes from the run's
    input and ``run_id`` from the run.
    """

    initial_prompt: str | None = None
    run_id: str = ""
    scratchpad: dict[str, Any] = attrs.Factory(dict)
    executed_branches: list[str] = attrs.Factory(list)


_IMMUTABLE: Final[frozenset[type]] = frozenset(
    {str, int, float, bool, type(None), bytes, Decimal, complex, range, frozenset}
)


def copy_value(value: Any) -> Any:
    """An isolated copy of ``value``, sharing what cannot be mutated or copied.

    Objects that ``copy.deepcopy`` refuses (locks, sockets, clients) are
    returned as they are: shared by reference, never an error.
    """
    t = type(value)
    # Immutable members are shared without a call: contexts are mostly scalars.
    imm = _IMMUTABLE
    if t is dict:
        if not value:
            return {}  # a fresh scratchpad: no comprehension to run
        return {k: v if type(v) in imm else copy_value(v) for k, v in value.items()}
    if t is list:
        if not value:
            return []
        return [v if type(v) in imm else copy_value(v) for v in value]
    if t in imm or isinstance(value, Enum):
        return value
    if t is tuple:
        if all(type(v) in imm for v in value):
            return value
        return tuple(copy_value(v) for v in value)
    if t is set:
        return set(value)
    try:
        return copy.deepcopy(value)
    except (TypeError, copy.Error):
        # Not copyable ("cannot pickle '_thread.lock' object"): a lock or a
        # client is meant to be shared, so every copy refers to this one.
        return value


_FIELDS_CACHE: dict[type, tuple[str, ...]] = {}


def context_field_names(cls: type) -> tuple[str, ...]:
    """The field names of a context class, attrs or pydantic (cached per class)."""
    names = _FIELDS_CACHE.get(cls)
    if names is None:
        if not attrs.has(cls) and is_pydantic_model(cls):
            names = model_field_names(cls)
            _PYDANTIC.add(cls)
        else:
            names = tuple(f.name for f in attrs.fields(cls))
        _FIELDS_CACHE[cls] = names
    return names


# Context classes that are pydantic models (filled by context_field_names).
_PYDANTIC: set[type] = set()


def _copy_pydantic(ctx: Any, include: frozenset[str] | None) -> Any:
    # copy.copy keeps pydantic's own state (fields set, extras, private
    # attributes); the field values are then copied like an attrs context's.
    cls = type(ctx)
    new = copy.copy(ctx)
    setter = object.__setattr__
    for name in context_field_names(cls):
        if include is None or name in include:
            setter(new, name, copy_value(getattr(ctx, name)))
            continue
        has_default, default = field_default(cls, name)
        setter(new, name, default if has_default else copy_value(getattr(ctx, name)))
    return new


# attrs context class -> its compiled whole-context copier (see _compile_copier).
_COPIERS: dict[type, Callable[[Any], Any]] = {}


def _compile_copier(cls: type, names: tuple[str, ...]) -> Callable[[Any], Any]:
    """A function copying every field of a ``cls`` instance, written out field by field.

    One copy per branch and map item: a loop of ``getattr``/``setattr`` by
    name costs several times the straight-line code compiled here (as attrs
    compiles its ``__init__``). The copier writes past the class's own
    ``__setattr__`` (frozen classes, validators) unless the class has none,
    exactly as the loop did; immutable values are shared without a call.
    """
    direct = cls.__setattr__ is object.__setattr__  # type: ignore[comparison-overlap]
    lines = ["def copier(ctx):", "    new = _new(cls)"]
    for name in names:
        target = f"new.{name} = " if direct else f"_set(new, {name!r}, "
        close = "" if direct else ")"
        lines.append(f"    v = ctx.{name}")
        lines.append("    t = type(v)")
        # An empty scratchpad or log (the usual branch start) is made without a call.
        lines.append(
            f"    {target}v if t in imm else {{}} if t is dict and not v else [] "
            f"if t is list and not v else copy_value(v){close}"
        )
    lines.append("    return new")
    scope: dict[str, Any] = {
        "_new": object.__new__,
        "_set": object.__setattr__,
        "cls": cls,
        "imm": _IMMUTABLE,
        "copy_value": copy_value,
    }
    # Our own source, from field names checked to be identifiers (as attrs does).
    exec("\n".join(lines), scope)
    copier: Callable[[Any], Any] = scope["copier"]
    return copier


def _copier(cls: type, names: tuple[str, ...]) -> Callable[[Any], Any] | None:
    copier = _COPIERS.get(cls)
    if copier is None:
        if not all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
            return None  # not spellable as attribute access: the loop below copies it
        copier = _COPIERS[cls] = _compile_copier(cls, names)
    return copier


def context_copier(cls: type[ContextT]) -> Callable[[ContextT], ContextT]:
    """The function ``copy_context`` runs to copy a whole ``cls`` context (looked up once).

    For a fan-out that copies one context per branch or item.
    """
    names = _FIELDS_CACHE.get(cls) or context_field_names(cls)
    copier = None if cls in _PYDANTIC else _copier(cls, names)
    return copier if copier is not None else copy_context


def copy_context(ctx: ContextT, include: frozenset[str] | None = None) -> ContextT:
    """A structural copy of an attrs or pydantic context (frozen classes included).

    Args:
        ctx: the context to copy.
        include: if given, only these fields carry their value; the others
            get their declared default (or keep the value if they have none).
    """
    cls = type(ctx)
    if include is None:
        copier = _COPIERS.get(cls)
        if copier is not None:
            return copier(ctx)  # type: ignore[no-any-return]
    names = _FIELDS_CACHE.get(cls) or context_field_names(cls)
    if cls in _PYDANTIC:
        return _copy_pydantic(ctx, include)  # type: ignore[no-any-return]
    if include is None:
        copier = _copier(cls, names)
        if copier is not None:
            return copier(ctx)  # type: ignore[no-any-return]
    new = object.__new__(cls)
    setter = object.__setattr__
    if include is None:
        imm = _IMMUTABLE
        for name in names:
            value = getattr(ctx, name)
            setter(new, name, value if type(value) in imm else copy_value(value))
        return new
    for f in attrs.fields(cls):  # type: ignore[arg-type]
        if f.name in include or f.default is attrs.NOTHING:
            setter(new, f.name, copy_value(getattr(ctx, f.name)))
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            factory = f.default.factory
            setter(new, f.name, factory(new) if f.default.takes_self else factory())
        else:
            setter(new, f.name, f.default)
    return new


def snapshot_context(ctx: Any) -> dict[str, Any]:
    """Field values to restore after a failed attempt (see :func:`restore_context`)."""
    return {name: copy_value(getattr(ctx, name)) for name in context_field_names(type(ctx))}


def restore_context(ctx: Any, snapshot: Mapping[str, Any]) -> None:
    """Put back the field values a snapshot holds (mutations of a failed attempt vanish)."""
    setter = object.__setattr__
    for name, value in snapshot.items():
        setter(ctx, name, copy_value(value))


def _initial_prompt(data: Any) -> str | None:
    if data is None:
        return None
    return data if isinstance(data, str) else str(data)


def build_context(
    context_model: Callable[..., Any],
    initial_context_data: Mapping[str, Any] | None,
    data: Any,
    run_id: str | None = None,
) -> Any:
    """Create a run's context the way the runner does (the only place contexts are made).

    ``initial_prompt`` is set from the input and ``run_id`` from the run,
    for custom context models too.

    Raises:
        PipelineDefinitionError: the model cannot be built from the data given.
    """
    # Copied: a run that mutates a field must not change the next run's start.
    values = {k: copy_value(v) for k, v in (initial_context_data or {}).items()}
    values.setdefault("initial_prompt", _initial_prompt(data))
    if not run_id and "run_id" not in values:
        import uuid  # only here: a runner always passes its run's id

        run_id = uuid.uuid4().hex
    values.setdefault("run_id", run_id)
    try:
        return context_model(**values)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        name = getattr(context_model, "__name__", repr(context_model))
        raise PipelineDefinitionError(
            f"Cannot build context {name}: {exc}. Pass the required fields in "
            "initial_context_data=, and make the model an attrs class with "
            "initial_prompt and run_id fields (subclass PipelineContext, or "
            "flujo_actors.pydantic.PipelineContext for a pydantic model)."
        ) from exc


def check_context_model(context_model: Any) -> None:
    """Raise PipelineDefinitionError unless ``context_model`` is a usable context class.

    That is an attrs class or a pydantic model with (at least) the fields
    ``initial_prompt`` and ``run_id``.
    """
    usable = isinstance(context_model, type) and (
        attrs.has(context_model) or is_pydantic_model(context_model)
    )
    if not usable:
        raise PipelineDefinitionError(
            f"Flujo: context_model must be an attrs class (subclass PipelineContext "
            f"with @attrs.define) or a pydantic model (subclass "
            f"flujo_actors.pydantic.PipelineContext), got {context_model!r}."
        )
    names = set(context_field_names(context_model))
    missing = {"initial_prompt", "run_id"} - names
    if missing:
        raise PipelineDefinitionError(
            f"Flujo: context_model {context_model.__name__} lacks the field(s) "
            f"{sorted(missing)!r}; subclass PipelineContext to get them."
        )
