"""The unstructure hooks of a converter: one builder for both variants.

:class:`Unstructure` is the hook factory :func:`~.converter.make_converter`
registers on its cattrs converter. Given a type it builds that type's hook:
a :class:`Hook`, callable as cattrs calls hooks (``hook(obj)``) and carrying
``walk(obj, depth)``, which container hooks call for their children so that
nesting is bounded by :data:`~._base.MAX_DEPTH` and a failure deep inside
names its path. The plain variant writes JSON data (``safe_serialize``); the
typed variant (``dump_typed``) wraps every non-JSON value in a type envelope
whose payload is what the plain rules write, so the scalar rules of
:mod:`.scalars` are applied in one place for both.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from .._pydantic_compat import is_pydantic_model
from . import pydantic_hooks as _pydantic
from ._base import (
    _BUILTIN_TAGS,
    _JSON_SCALARS,
    _TAG_CLASSES,
    MAX_DEPTH,
    TYPE_KEY,
    VALUE_KEY,
    SerializeFn,
    _canonical,
    _coerce_scalar_key,
    _dump_pairs,
    _Failure,
    _Handler,
    _key_segment,
    _mro_lookup,
    _sorted_items,
    _too_deep,
    _unsupported,
    _walk_items,
    type_tag,
)
from .containers import container_dump
from .loaders import _field_names
from .scalars import scalar_unstructure

if TYPE_CHECKING:
    from collections.abc import Callable


__all__: list[str] = []  # internal; see flujo_actors.serialization


class Hook:
    """A converter's hook for one type: ``hook(obj)`` for cattrs, ``walk(obj, depth)`` inside."""

    __slots__ = ("tp", "walk")

    def __init__(self, tp: type, walk: _Handler) -> None:
        self.tp = tp
        self.walk = walk

    def __call__(self, obj: object) -> Any:
        try:
            return self.walk(obj, 0)
        except _Failure as failure:
            raise failure.to_error("$", "serialize") from failure.cause

    def __repr__(self) -> str:
        return f"Hook({self.walk!r})"


def remember(tp: type) -> str:
    """The tag of ``tp``, recorded so that :func:`~.loaders._resolve_tag` finds it again."""
    tag = type_tag(tp)
    if tp not in _BUILTIN_TAGS:
        _TAG_CLASSES[tag] = tp
    return tag


class Unstructure:
    """Builds the hook of each type, for one variant of one registry generation.

    ``hook_of(tp)`` asks the converter (its dispatch caches per type, this
    builder is the factory behind it) and keeps the ``walk`` functions in a
    local table, so the per-value cost is one dict lookup.
    """

    def __init__(
        self,
        serializers: Mapping[type, SerializeFn],
        *,
        typed: bool,
        plain: Unstructure | None = None,
    ) -> None:
        self.serializers = serializers
        self.typed = typed
        # The typed variant's payloads are what the plain rules write.
        self.plain: Unstructure = plain if plain is not None else self
        self.get_hook: Callable[[type], Hook] = self.build
        table: dict[type, _Handler] = {}

        # A closure over a local table: the hot path pays no attribute lookups.
        def walk(obj: object, depth: int) -> Any:
            tp = type(obj)
            if tp is str or tp is int or tp is float or tp is bool or obj is None:
                return obj
            handler = table.get(tp)
            if handler is None:
                handler = table[tp] = self.get_hook(tp).walk
            return handler(obj, depth)

        self.walk: _Handler = walk

    def attach(self, dispatch: Callable[[type], object]) -> None:
        """Look hooks up through the converter's dispatch (``get_unstructure_hook``).

        A hook the dispatch found for a base class (cattrs' own ``str`` and
        ``bytes`` hooks follow the MRO) is not the subclass's: that type gets
        its own hook from this builder.
        """
        build = self.build

        def get_hook(tp: type) -> Hook:
            hook = dispatch(tp)
            if type(hook) is Hook and hook.tp is tp:
                return hook
            return build(tp)

        self.get_hook = get_hook

    # -- the factory -------------------------------------------------------------

    def build(self, tp: type) -> Hook:
        """The hook of ``tp`` (the cattrs hook factory)."""
        return Hook(tp, self._handler(tp))

    def _handler(self, tp: type) -> _Handler:
        if tp in _JSON_SCALARS:
            return _identity
        custom = _mro_lookup(tp, self.serializers)
        if custom is not None:
            plain = self.plain._custom(tp, custom)
            return self._wrap(tp, plain) if self.typed else plain
        walk = self.walk
        if issubclass(tp, enum.Enum):
            return self._wrap(tp, _child(".value", lambda obj: obj.value, walk))
        if is_pydantic_model(tp):
            if self.typed:
                return _pydantic.build_dump(tp, walk, remember)
            return _pydantic.build_ser(walk)
        names = _field_names(tp)
        if names is not None:
            return self._wrap(tp, _fields(names, walk))
        if self.typed and tp is not list and issubclass(tp, (Mapping, list, deque, set, frozenset)):
            # OrderedDict, defaultdict, Counter, deque and other container
            # subclasses: tagged with their own class (see .containers).
            handler = container_dump(tp, walk, remember)
            if handler is not None:
                return handler
        rule = scalar_unstructure(tp)
        if rule is not None:
            if not self.typed or tp is bool:
                return _scalar(rule)
            tag = remember(tp)
            return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: rule(obj)}
        if issubclass(tp, Mapping):
            return self._typed_mapping if self.typed else self._plain_mapping
        if issubclass(tp, (list, tuple, deque)):
            items = _walk_items(walk)
            return self._wrap(tp, items) if self.typed and issubclass(tp, tuple) else items
        if issubclass(tp, (set, frozenset)):
            members = _set(walk)
            if not self.typed:
                return members
            return _envelope(type_tag(frozenset if issubclass(tp, frozenset) else set), members)
        return _unsupported

    def _wrap(self, tp: type, payload: _Handler) -> _Handler:
        """In the typed variant, ``payload`` inside ``tp``'s envelope; else ``payload``."""
        if not self.typed:
            return payload
        return _envelope(remember(tp), payload)

    def _custom(self, tp: type, custom: SerializeFn) -> _Handler:
        """A registered serializer: its output is walked too (it must be JSON data)."""
        walk = self.walk
        segment = f"<serialized {tp.__qualname__}>"

        def ser_custom(obj: object, depth: int) -> Any:
            if depth >= MAX_DEPTH:
                _too_deep(obj)
            try:
                produced = custom(obj)
            except Exception as exc:  # a user hook: report it with its path
                raise _Failure("hook", obj, cause=exc) from exc
            try:
                return walk(produced, depth + 1)
            except _Failure as failure:
                failure.push(segment, obj)
                raise

        return ser_custom

    # -- mappings ------------------------------------------------------------------

    def _plain_mapping(self, obj: Mapping[Any, Any], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        walk = self.walk
        out: dict[str, Any] = {}
        for key, item in obj.items():
            json_key = key if type(key) is str else self._json_key(key, obj, depth)
            try:
                out[json_key] = walk(item, depth + 1)
            except _Failure as failure:
                failure.push(_key_segment(key), obj)
                raise
        if len(out) != len(obj):
            self._key_collision(obj, depth)
        return out

    def _json_key(self, key: object, mapping: object, depth: int) -> str:
        coerced = _coerce_scalar_key(key)
        if coerced is not None:
            return coerced
        # Enum, Decimal, UUID, date, tuples...: serialize, then coerce like JSON.
        try:
            value = self.walk(key, depth + 1)
        except _Failure as failure:
            failure.push("[<key>]", mapping)
            raise
        coerced = _coerce_scalar_key(value)
        return coerced if coerced is not None else _canonical(value)

    def _key_collision(self, obj: Mapping[Any, Any], depth: int) -> NoReturn:
        owners: dict[str, object] = {}
        for key in obj:
            coerced = key if type(key) is str else self._json_key(key, obj, depth)
            if coerced in owners:
                raise _Failure(
                    "collision",
                    obj,
                    f"the keys {owners[coerced]!r} and {key!r} both become the JSON key "
                    f"{coerced!r}. Use distinct keys.",
                )
            owners[coerced] = key
        raise AssertionError("unreachable: no collision found")  # pragma: no cover

    def _typed_mapping(self, obj: Mapping[Any, Any], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        walk = self.walk
        out: dict[str, Any] = {}
        key: object = None
        needs_pairs = False
        try:
            for key, item in obj.items():
                if type(key) is not str or key == TYPE_KEY:
                    needs_pairs = True
                    break
                out[key] = walk(item, depth + 1)
        except _Failure as failure:
            failure.push(_key_segment(key), obj)
            raise
        if needs_pairs:
            # Non-string keys (or our own marker as a key) need the tagged
            # form, so that the keys come back exactly.
            return {TYPE_KEY: type_tag(dict), VALUE_KEY: _dump_pairs(walk, obj, depth)}
        return out


# -- hook shapes shared by both variants -----------------------------------------------


def _identity(obj: object, depth: int) -> object:
    return obj


def _scalar(rule: Callable[[Any], object]) -> _Handler:
    return lambda obj, depth: rule(obj)


def _envelope(tag: str, payload: _Handler) -> _Handler:
    return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: payload(obj, depth)}


def _child(segment: str, get: Callable[[Any], object], walk: _Handler) -> _Handler:
    def walk_child(obj: object, depth: int) -> Any:
        try:
            return walk(get(obj), depth + 1)
        except _Failure as failure:
            failure.push(segment, obj)
            raise

    return walk_child


def _fields(names: tuple[str, ...], walk: _Handler) -> _Handler:
    def walk_fields(obj: object, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        out = {}
        name = ""
        try:
            for name in names:
                out[name] = walk(getattr(obj, name), depth + 1)
        except _Failure as failure:
            failure.push(f".{name}", obj)
            raise
        return out

    return walk_fields


def _set(walk: _Handler) -> _Handler:
    def walk_set(obj: set[Any], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        try:
            return _sorted_items([walk(item, depth + 1) for item in obj])
        except _Failure as failure:
            failure.push("[<set member>]", obj)
            raise

    return walk_set
