"""Typed envelopes for container subclasses.

``dump_typed`` keeps plain ``list``/``dict``/``set``/``frozenset`` as they are;
this module handles what used to come back as one of those: ``OrderedDict``,
``defaultdict`` (with its ``default_factory``), ``Counter``, ``deque`` (with
its ``maxlen``), other mappings, and subclasses of ``list``, ``dict``, ``set``
and ``frozenset``. Each is wrapped in an envelope tagged with its own class:

* mappings: ``[[key, value], ...]`` (order and non-string keys survive),
  rebuilt as ``cls(dict(pairs))``; a ``defaultdict`` as
  ``{"default_factory": tag | None, "items": pairs}``;
* ``deque``: ``{"items": [...], "maxlen": n | None}``;
* list subclasses: ``[...]``, rebuilt as ``cls(items)``; set subclasses: the
  sorted members, rebuilt as ``cls(members)``.

A ``defaultdict``'s factory is stored by name, so it must be ``None`` or a
class (``list``, ``int``, your own): a lambda or function cannot be named
safely (loading never calls a function chosen by stored data).

"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._base import (
    MAX_DEPTH,
    TYPE_KEY,
    VALUE_KEY,
    _dump_pairs,
    _Failure,
    _load_list,
    _resolve_tag,
    _sorted_items,
    _walk_items,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[Any, int], Any]

__all__ = ["container_dump", "container_loader"]


def container_dump(tp: type, dump: Handler, remember: Callable[[type], str]) -> Handler | None:
    """The ``dump_typed`` handler of a container type other than plain list/dict/set, or None."""
    if tp in (list, dict, set, frozenset, tuple) or not issubclass(
        tp, (Mapping, list, deque, set, frozenset)
    ):
        return None
    tag = remember(tp)

    items = _walk_items(dump)

    def pairs(obj: Mapping[Any, Any], depth: int) -> list[Any]:
        if depth >= MAX_DEPTH:
            raise _Failure("deep", obj)
        return _dump_pairs(dump, obj, depth)

    if issubclass(tp, defaultdict):

        def dump_defaultdict(obj: defaultdict[Any, Any], depth: int) -> Any:
            factory = obj.default_factory
            if factory is not None and not isinstance(factory, type):
                name = getattr(factory, "__qualname__", type(factory).__qualname__)
                raise _Failure(
                    "shape",
                    obj,
                    f"a defaultdict whose default_factory is {name!r}, which cannot be stored: "
                    "only None or a class (list, int, set, dict, your own) is stored by name. "
                    "Fix: build it as defaultdict(list) (a class), or store dict(d).",
                )
            payload = {
                "default_factory": None if factory is None else remember(factory),
                "items": pairs(obj, depth),
            }
            return {TYPE_KEY: tag, VALUE_KEY: payload}

        return dump_defaultdict
    if issubclass(tp, Mapping):
        return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: pairs(obj, depth)}
    if issubclass(tp, deque):
        return lambda obj, depth: {
            TYPE_KEY: tag,
            VALUE_KEY: {"items": items(obj, depth), "maxlen": obj.maxlen},
        }
    if issubclass(tp, list):
        return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: items(obj, depth)}

    def dump_set(obj: set[Any], depth: int) -> Any:
        members = items(obj, depth)
        return {TYPE_KEY: tag, VALUE_KEY: _sorted_items(members)}

    return dump_set


def container_loader(cls: type, load: Handler) -> Handler | None:
    """The ``load_typed`` loader of a class :func:`container_dump` tags, or None."""

    def load_pairs(payload: Any, depth: int) -> dict[Any, Any]:
        loaded = _load_list(payload, depth, load)
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in loaded):
            raise _Failure("shape", payload, "expected a list of [key, value] pairs.")
        return dict(loaded)

    def fields(payload: Any, *names: str) -> list[Any]:
        if type(payload) is not dict or set(payload) != set(names):
            raise _Failure(
                "shape", payload, f"expected an object with the keys {', '.join(names)}."
            )
        return [payload[name] for name in names]

    if issubclass(cls, defaultdict):

        def load_defaultdict(payload: Any, depth: int) -> Any:
            factory_tag, pairs = fields(payload, "default_factory", "items")
            factory = None if factory_tag is None else _resolve_tag(factory_tag)
            return cls(factory, load_pairs(pairs, depth))

        return load_defaultdict
    if issubclass(cls, Mapping):
        build: Any = cls  # a Mapping subclass: constructed from a dict by convention
        return lambda payload, depth: build(load_pairs(payload, depth))
    if issubclass(cls, deque):

        def load_deque(payload: Any, depth: int) -> Any:
            items, maxlen = fields(payload, "items", "maxlen")
            return cls(_load_list(items, depth, load), maxlen)

        return load_deque
    if issubclass(cls, (list, set, frozenset)):
        return lambda payload, depth: cls(_load_list(payload, depth, load))
    return None
