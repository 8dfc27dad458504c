"""Helpers for testing pipelines and actors deterministically on trio's MockClock.

Also: :func:`check_state_backend`, the conformance suite for state backends,
and (as a pytest plugin, ``pytest_plugins = ["flujo_actors.testing.serializers"]``)
fixtures that isolate the serializer registry.
"""

from .agents import FlakyAgent as FlakyAgent
from .agents import SleepAgent as SleepAgent
from .agents import StubAgent as StubAgent
from .agents import UsageOutput as UsageOutput
from .agents import run_with_mock_clock as run_with_mock_clock
from .backends import StateBackendFactory as StateBackendFactory
from .backends import check_state_backend as check_state_backend

__all__ = [
    "FlakyAgent",
    "SleepAgent",
    "StateBackendFactory",
    "StubAgent",
    "UsageOutput",
    "check_state_backend",
    "run_with_mock_clock",
]
