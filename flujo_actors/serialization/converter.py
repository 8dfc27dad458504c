"""The converter factory: :func:`make_converter` builds every converter the package uses.

One factory, two variants of the same rules. The plain converter is what
``safe_serialize`` / ``safe_deserialize`` run on (and what
:func:`~flujo_actors.serialization.get_converter` returns); the typed variant
(``typed=True``) is what ``dump_typed`` / ``load_typed`` run on: its hooks wrap
every non-JSON value in a type envelope and read envelopes back. Both get the
scalar rules of :mod:`.scalars`, the record, pydantic and container hooks, and
the registered serializers and deserializers.

Importing this module imports cattrs (~40 ms): the registry imports it on the
first call that needs a converter.
"""

from __future__ import annotations

import pathlib
import typing
from typing import TYPE_CHECKING, Any

import cattrs
from cattrs.gen import make_dict_structure_fn

from .._pydantic_compat import is_pydantic_model
from . import pydantic_hooks as _pydantic
from ._base import _with_type
from .hooks import Unstructure
from .loaders import Load, _is_record_type, _late_field_names
from .scalars import SCALAR_STRUCTURE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._base import DeserializeFn, SerializeFn


__all__ = ["Converter", "make_converter"]


class Converter(cattrs.Converter):
    """A cattrs converter with the flujo_actors rules; ``walk``/``load`` for the entry points.

    ``unstructure`` and ``structure`` work as in cattrs (``structure(value, Any)``
    of the typed variant reads envelopes). ``walk(obj, depth)`` and
    ``load(value, depth)`` are the same hooks without the top-level error
    translation, for the package's entry points.
    """

    #: The builder of this converter's unstructure hooks (see :mod:`.hooks`).
    unstructure_rules: Unstructure
    walk: Callable[[Any, int], Any]
    load: Callable[[Any, int], Any]


def make_converter(
    *,
    typed: bool = False,
    serializers: Mapping[type, SerializeFn] | None = None,
    deserializers: Mapping[type, Callable[..., object]] | None = None,
    plain: Converter | None = None,
) -> Converter:
    """Build a cattrs converter configured the flujo_actors way.

    Hooks: exact ``Decimal`` strings, ISO 8601 dates and times, UUID strings,
    base64 bytes, strict scalars (``2.5`` never becomes ``2``, ``1`` never
    becomes ``"1"``), enums (tuple values included), attrs classes and
    dataclasses with their ``init=False`` fields, pydantic models, mappings
    (keys coerced the way JSON does), sets (sorted), nesting bounded by
    ``MAX_DEPTH``, failures naming the path, and the registered types, which
    take precedence over the built-in handling along the MRO.

    Args:
        typed: Build the typed variant (the envelopes of ``dump_typed``).
        serializers: Type -> ``fn(obj) -> JSON data``.
        deserializers: Type -> ``fn(value) -> obj`` or ``fn(value, type_) -> obj``
            (as :func:`~flujo_actors.serialization.register_custom_deserializer`).
        plain: For ``typed=True``: the plain converter of the same registry,
            whose rules write the envelopes' payloads (built here if omitted).

    Returns:
        A new :class:`Converter`.
    """
    serializers = dict(serializers or {})
    deserializers = {cls: _with_type(fn) for cls, fn in (deserializers or {}).items()}
    conv = Converter(detailed_validation=True)

    for classes, structure_hook in SCALAR_STRUCTURE:
        for cls in classes:
            conv.register_structure_hook(cls, structure_hook)

    def record_structure_factory(cls: Any) -> Callable[[Any, Any], Any]:
        base = make_dict_structure_fn(cls, conv)
        late = _late_field_names(typing.get_origin(cls) or cls)
        if not late:
            return base
        try:
            hints = typing.get_type_hints(typing.get_origin(cls) or cls)
        except Exception:  # unresolvable annotations: rebuild those fields as-is
            hints = {}

        def structure_with_late_fields(value: Any, type_: Any) -> Any:
            # cattrs drops init=False fields (of frozen classes and dataclasses);
            # restore them so that saved state survives a round trip.
            obj = base(value, type_)
            for name in late:
                if name in value:
                    structured = conv.structure(value[name], hints.get(name, Any))
                    object.__setattr__(obj, name, structured)
            return obj

        return structure_with_late_fields

    conv.register_structure_hook_factory(_is_record_type, record_structure_factory)
    # pydantic models: model_validate on the target type (registered types still win).
    conv.register_structure_hook_func(is_pydantic_model, _pydantic.structure)
    for cls, deserialize in deserializers.items():
        conv.register_structure_hook(cls, _custom_structure_hook(deserialize))

    plain_rules = None
    if typed:
        if plain is None:
            plain = make_converter(serializers=serializers, deserializers=deserializers)
        plain_rules = plain.unstructure_rules
    rules = Unstructure(serializers, typed=typed, plain=plain_rules)
    # Every class's unstructure hook comes from `rules`; cattrs' own defaults
    # for str, bytes and Path are replaced so that they do too.
    conv.register_unstructure_hook_factory(lambda t: isinstance(t, type), rules.build)
    for cls in (str, bytes, pathlib.Path):
        conv.register_unstructure_hook(cls, rules.build(cls))
    rules.attach(conv.get_unstructure_hook)
    conv.unstructure_rules = rules
    conv.walk = rules.walk
    if typed:
        loads = Load(serializers, deserializers)
        conv.register_structure_hook_func(lambda t: t is Any, loads.structure)
        conv.load = loads.load
    return conv


def _custom_structure_hook(fn: DeserializeFn) -> Callable[[Any, Any], object]:
    def structure_custom(value: Any, type_: Any) -> object:
        return fn(value, type_)

    return structure_custom
