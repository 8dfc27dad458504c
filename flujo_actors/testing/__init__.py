"""Helpers for testing pipelines and actors deterministically on trio's MockClock.

Actors: :class:`Probe` (records what it receives; ``expect_message`` /
``expect_no_message``), :func:`crash` and :func:`crash_storm`.

Also: :func:`check_state_backend`, the conformance suite for state backends,
:func:`flujo_actors.testing.leases.check_leases`, the one for the run leases of
shared backends (it needs a real shared store, e.g. a PostgreSQL server:
:class:`flujo_actors.testing.pg_server.PgServer` starts a throwaway one from the
machine's packages),
:func:`isolated_serializer_registry` / :func:`assert_round_trips` for custom
serializers, and (as a pytest plugin, ``pytest_plugins =
["flujo_actors.testing.serializers"]``) a fixture that isolates the serializer
registry. Everything here except that plugin works without pytest.
"""

from .agents import FlakyAgent as FlakyAgent
from .agents import SleepAgent as SleepAgent
from .agents import StubAgent as StubAgent
from .agents import UsageOutput as UsageOutput
from .agents import run_with_mock_clock as run_with_mock_clock
from .backends import StateBackendFactory as StateBackendFactory
from .backends import check_state_backend as check_state_backend
from .probe import CrashedOnPurpose as CrashedOnPurpose
from .probe import CrashStorm as CrashStorm
from .probe import Probe as Probe
from .probe import crash as crash
from .probe import crash_storm as crash_storm
from .roundtrip import assert_round_trips as assert_round_trips
from .roundtrip import isolated_serializer_registry as isolated_serializer_registry

__all__ = [
    "CrashStorm",
    "CrashedOnPurpose",
    "FlakyAgent",
    "Probe",
    "SleepAgent",
    "StateBackendFactory",
    "StubAgent",
    "UsageOutput",
    "assert_round_trips",
    "check_state_backend",
    "crash",
    "crash_storm",
    "isolated_serializer_registry",
    "run_with_mock_clock",
]
