"""Serialization: one cattrs converter, a thread-safe registry, and typed envelopes.

Everything flujo_actors persists (state checkpoints, cache entries) goes through
this module, and everything it produces is plain JSON data: ``dict`` (``str``
keys), ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``. Nothing is
ever pickled.

Four entry points:

* :func:`safe_serialize` turns attrs classes, dataclasses, enums, ``Decimal``
  (exact, as a string), ``datetime``/``date``/``time`` (ISO 8601), ``UUID``,
  ``bytes`` (base64), sets, tuples, mappings and registered types into JSON
  data. An unsupported value raises :class:`~flujo_actors.errors.SerializationError`
  naming its type, where it sat (``context.scratchpad['x']``) and the one-line
  fix.
* :func:`safe_deserialize` rebuilds a value of a *known* static type (attrs
  classes, generics such as ``list[Decimal]``, ``X | None``, registered types)
  through the package's cattrs converter.
* :func:`dump_typed` / :func:`load_typed` handle values whose static type is
  unknown (step outputs typed ``Any``): non-JSON values are wrapped in a small
  envelope ``{"__flujo_type__": "module:qualname", "value": ...}`` so they come
  back with their type. Plain JSON data passes through unwrapped.

One converter factory, :func:`make_converter`, is the only home of the rules
(the scalar ones live in :mod:`.scalars`): it builds the plain cattrs
converter behind ``safe_serialize``/``safe_deserialize`` (what
:func:`get_converter` returns) and, from the same rules, the typed variant
behind ``dump_typed``/``load_typed``, whose hooks write and read the type
envelopes. Its hooks walk nested data with a depth bound and name the path
of a failure.

The registry (:func:`register_custom_serializer`,
:func:`register_custom_deserializer`) feeds the factory. It is guarded by a
lock and published copy-on-write: a registration makes a new immutable
generation (whose two converters are built on first use) and swaps it in
with one assignment. Readers in other threads never take the lock and never
observe a half-updated table; a call already in progress finishes on the
generation it started with.

The package, in layer order: :mod:`._base` (JSON types, envelope keys, type
tags, walk failures), :mod:`.scalars` (the scalar rules),
:mod:`.pydantic_hooks` and :mod:`.containers` (models and container
subclasses), :mod:`.loaders` (the typed variant's structure side),
:mod:`.hooks` (the unstructure hooks of both variants), :mod:`.converter`
(the factory), :mod:`.registry` (the registry and the entry points).

Its layer: the codec of the value types, with them at the bottom of the
layer order (DESIGN.md "Layers"). It imports only :mod:`flujo_actors.errors`
and ``_pydantic_compat``, and the layers above encode through it: cache keys
(:mod:`flujo_actors.policy.cache_key`) are digests of its typed encoding,
cache entries (:mod:`flujo_actors.step_cache`) are its documents, and the
state backends and executors at the edges store and ship what it produces.
It is imported lazily where the import of ``cattrs`` would otherwise land on
``import flujo_actors``.
"""

from ._base import MAX_DEPTH as MAX_DEPTH
from ._base import TYPE_KEY as TYPE_KEY
from ._base import VALUE_KEY as VALUE_KEY
from ._base import JSONValue as JSONValue
from ._base import type_tag as type_tag
from .converter import make_converter as make_converter
from .registry import _registry_snapshot as _registry_snapshot
from .registry import _restore_registry as _restore_registry
from .registry import dump_typed as dump_typed
from .registry import dumps_json as dumps_json
from .registry import get_converter as get_converter
from .registry import load_typed as load_typed
from .registry import loads_json as loads_json
from .registry import register_custom_deserializer as register_custom_deserializer
from .registry import register_custom_serializer as register_custom_serializer
from .registry import safe_deserialize as safe_deserialize
from .registry import safe_serialize as safe_serialize

__all__ = [
    "MAX_DEPTH",
    "TYPE_KEY",
    "VALUE_KEY",
    "JSONValue",
    "dump_typed",
    "dumps_json",
    "get_converter",
    "load_typed",
    "loads_json",
    "make_converter",
    "register_custom_deserializer",
    "register_custom_serializer",
    "safe_deserialize",
    "safe_serialize",
    "type_tag",
]
