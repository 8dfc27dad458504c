"""Serializer test helpers that need no pytest: registry isolation and round trips.

:mod:`flujo_actors.testing.serializers` wraps them as a pytest plugin; these
plain functions work in any interpreter.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from ..serialization import (
    _registry_snapshot,
    _restore_registry,
    dump_typed,
    load_typed,
    safe_deserialize,
    safe_serialize,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["assert_round_trips", "isolated_serializer_registry"]


@contextlib.contextmanager
def isolated_serializer_registry() -> Iterator[None]:
    """Undo, on exit, every custom (de)serializer registered inside the block.

    The registry is process-wide; tests that register types should not leak
    them into later tests. Not meant for concurrent use by tests running in
    parallel threads of one process (the restore is global).
    """
    snapshot = _registry_snapshot()
    try:
        yield
    finally:
        _restore_registry(snapshot)


def assert_round_trips(value: object, type_: object = None) -> None:
    """Assert that ``value`` survives flujo_actors' serialization unchanged.

    Always checks :func:`~flujo_actors.serialization.dump_typed` then
    :func:`~flujo_actors.serialization.load_typed` (what the cache and the
    runner's crash-resume do) through JSON text: same type, equal value.
    With ``type_``, also checks ``safe_deserialize(safe_serialize(value), type_)``.

    Raises:
        AssertionError: The value changed, naming both sides.
        SerializationError: The value cannot be serialized at all.
    """
    typed = json.loads(json.dumps(dump_typed(value)))
    rebuilt = load_typed(typed)
    if type(rebuilt) is not type(value) or rebuilt != value:
        raise AssertionError(
            f"dump_typed/load_typed changed the value: {value!r} came back as {rebuilt!r}"
        )
    if type_ is not None:
        plain = json.loads(json.dumps(safe_serialize(value)))
        structured = safe_deserialize(plain, type_)
        if type(structured) is not type(value) or structured != value:
            raise AssertionError(
                f"safe_serialize/safe_deserialize as {type_!r} changed the value: "
                f"{value!r} came back as {structured!r}"
            )
