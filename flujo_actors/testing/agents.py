"""Stub agents for deterministic tests (they sleep on trio's clock, so MockClock drives them)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import trio

# trio does not import its testing module itself: without this line
# run_with_mock_clock works only where pytest-trio happened to import it.
import trio.testing

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FlakyAgent", "SleepAgent", "StubAgent", "UsageOutput", "run_with_mock_clock"]


@attrs.define
class UsageOutput:
    """An agent output that reports usage the Flujo way (``cost_usd``, ``token_counts``)."""

    value: Any
    cost_usd: float | Decimal = 0.0
    token_counts: int = 0


class StubAgent:
    """Returns scripted outputs in order (the last one repeats) and records its inputs.

    An output that is an exception instance is raised instead of returned.
    """

    def __init__(self, outputs: Sequence[Any]) -> None:
        if not outputs:
            raise ValueError("StubAgent needs at least one scripted output, got [].")
        self.outputs = list(outputs)
        self.inputs: list[Any] = []

    @property
    def calls(self) -> int:
        return len(self.inputs)

    async def run(self, data: Any, **kwargs: Any) -> Any:
        self.inputs.append(data)
        out = self.outputs[min(len(self.inputs), len(self.outputs)) - 1]
        if isinstance(out, BaseException):
            raise out
        return out


class FlakyAgent:
    """Fails ``failures`` times with ``error`` and then returns ``transform(data)``."""

    def __init__(
        self,
        failures: int,
        error: Exception | None = None,
        result: Any = None,
    ) -> None:
        self.failures = failures
        self.error = error or RuntimeError("flaky failure")
        self.result = result
        self.calls = 0

    async def run(self, data: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return data if self.result is None else self.result


class SleepAgent:
    """Sleeps ``seconds`` on trio's clock, then returns its input; records start/end times."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: list[float] = []
        self.finished: list[float] = []

    async def run(self, data: Any, **kwargs: Any) -> Any:
        self.started.append(trio.current_time())
        await trio.sleep(self.seconds)
        self.finished.append(trio.current_time())
        return data


def run_with_mock_clock(async_fn: Any, *args: Any, autojump_threshold: float = 0.0) -> Any:
    """``trio.run`` with a fresh :class:`trio.testing.MockClock` (virtual time, autojumping).

    Works in any interpreter (no pytest needed). ``autojump_threshold=0.0``
    jumps the clock as soon as every task is blocked, so sleeps take no real
    time; cancellation behaves as under ``trio.run``.
    """
    clock = trio.testing.MockClock(autojump_threshold=autojump_threshold)
    return trio.run(async_fn, *args, clock=clock)
