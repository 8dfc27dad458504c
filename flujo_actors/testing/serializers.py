"""Test helpers for serializers, as a pytest plugin: registry isolation and round trips.

Use it as a pytest plugin (``pytest_plugins = ["flujo_actors.testing.serializers"]``
in a ``conftest.py``) to get the :func:`serializer_registry` fixture, or call
:func:`isolated_serializer_registry` / :func:`assert_round_trips` directly (they
live in :mod:`flujo_actors.testing.roundtrip`, which does not need pytest, and are
re-exported by :mod:`flujo_actors.testing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .roundtrip import assert_round_trips as assert_round_trips
from .roundtrip import isolated_serializer_registry as isolated_serializer_registry

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["assert_round_trips", "isolated_serializer_registry", "serializer_registry"]


@pytest.fixture
def serializer_registry() -> Iterator[None]:
    """Pytest fixture: registrations made during the test are undone afterwards."""
    with isolated_serializer_registry():
        yield
