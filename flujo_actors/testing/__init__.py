"""Helpers for testing pipelines and actors deterministically on trio's MockClock."""

from .agents import FlakyAgent as FlakyAgent
from .agents import SleepAgent as SleepAgent
from .agents import StubAgent as StubAgent
from .agents import UsageOutput as UsageOutput
from .agents import run_with_mock_clock as run_with_mock_clock

__all__ = [
    "FlakyAgent",
    "SleepAgent",
    "StubAgent",
    "UsageOutput",
    "run_with_mock_clock",
]
