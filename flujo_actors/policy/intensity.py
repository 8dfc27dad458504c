"""Restart intensity and restart backoff: the pure decisions of a supervisor.

Nothing here imports trio or does I/O: the supervisor passes the current
time (trio's clock) and a uniform random number in, and gets a decision or a
delay out. That keeps the rules exhaustively testable without an event loop.

Intensity follows OTP: a supervisor gives up when *more than*
``max_restarts`` restarts happened within a sliding window of
``max_seconds``, counted over all of its children. A restart at time ``s``
is inside the window at time ``t`` while ``t - s < max_seconds``.
"""

from __future__ import annotations

import collections
import math
import random

import attrs

__all__ = ["Backoff", "RestartIntensity", "RestartRecord", "backoff_delay"]


@attrs.frozen(kw_only=True)
class RestartRecord:
    """One restart a supervisor made (or was about to make when it gave up).

    Attributes:
        child: name of the child that exited.
        time: when it exited, on the supervisor's clock (seconds).
        error: ``"Type: message"`` of the crash, or None after a normal exit.
    """

    child: str
    time: float
    error: str | None = None


class RestartIntensity:
    """A sliding-window restart counter: may the supervisor restart once more?

    Args:
        max_restarts: how many restarts the window may hold (``>= 0``; 0 means
            the first exit that needs a restart makes the supervisor give up).
        max_seconds: the window's length in seconds (``> 0``).

    Only the newest ``max_restarts + 1`` records are kept: that is enough to
    decide exactly (the window holds more than ``max_restarts`` restarts iff
    the ``max_restarts + 1``-th newest one is still inside it), so memory stays
    bounded however long the supervisor lives.
    """

    __slots__ = ("_window", "max_restarts", "max_seconds", "total")

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}.")
        if (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, (int, float))
            or not math.isfinite(max_seconds)
            or max_seconds <= 0
        ):
            raise ValueError(f"max_seconds must be a finite number > 0, got {max_seconds!r}.")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        #: Restarts recorded over the counter's life (allowed or not).
        self.total = 0
        self._window: collections.deque[RestartRecord] = collections.deque(maxlen=max_restarts + 1)

    def record(self, restart: RestartRecord) -> bool:
        """Count ``restart``; True if it is allowed, False if intensity is exceeded.

        Raises:
            ValueError: ``restart.time`` is earlier than the previous record's
                (the clock must be monotonic).
        """
        window = self._window
        if window and restart.time < window[-1].time:
            raise ValueError(
                f"Restart times must not go backwards: got {restart.time!r} after "
                f"{window[-1].time!r}; pass a monotonic clock (trio.current_time())."
            )
        window.append(restart)
        self.total += 1
        now = restart.time
        # The same comparison the docs state (``now - s < max_seconds``), not a
        # precomputed cutoff, so float rounding cannot disagree with it.
        while window and now - window[0].time >= self.max_seconds:
            window.popleft()
        return len(window) <= self.max_restarts

    @property
    def window(self) -> tuple[RestartRecord, ...]:
        """The recent restarts that still count (as of the last record), oldest first."""
        return tuple(self._window)

    def check_invariants(self) -> None:
        """Assert the internal state is consistent (used by the stateful tests)."""
        window = self._window
        assert len(window) <= self.max_restarts + 1
        assert len(window) <= self.total
        times = [r.time for r in window]
        assert times == sorted(times)
        if window:
            newest = window[-1].time
            assert all(newest - t < self.max_seconds for t in times)


def backoff_delay(
    attempt: int, *, base_s: float, factor: float, max_s: float, jitter: float, unit: float
) -> float:
    """The delay before restart number ``attempt`` (0-based) of a crash streak.

    ``min(max_s, base_s * factor**attempt)``, then scaled by a jitter factor
    in ``[1 - jitter, 1 + jitter)`` chosen by ``unit`` (a uniform number in
    ``[0, 1)``), and finally capped at ``max_s`` again.
    """
    try:
        delay = min(max_s, base_s * factor**attempt)
    except OverflowError:
        delay = max_s
    if jitter:
        delay = min(max_s, delay * (1.0 + jitter * (2.0 * unit - 1.0)))
    return max(0.0, delay)


@attrs.frozen(kw_only=True)
class Backoff:
    """Jittered exponential delay between a crash and the restart that follows.

    The n-th consecutive crash of a child (n = 0, 1, ...) waits
    ``min(max_s, base_s * factor**n)`` seconds, give or take ``jitter``
    (a fraction: 0.1 is +/-10 %), on trio's clock. A child's streak resets
    once it handles a message successfully. With ``seed`` set the jitter
    sequence of each supervisor run is reproducible; ``jitter=0`` makes the
    delays exact.

    Raises:
        ValueError: a negative or non-finite duration, ``factor < 1``,
            ``max_s < base_s`` or ``jitter`` outside ``[0, 1)``.
    """

    base_s: float = 0.1
    factor: float = 2.0
    max_s: float = 10.0
    jitter: float = 0.1
    seed: int | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("base_s", "max_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Backoff: {name} must be a finite number >= 0, got {value!r}.")
        if not math.isfinite(self.factor) or self.factor < 1:
            raise ValueError(f"Backoff: factor must be a finite number >= 1, got {self.factor!r}.")
        if self.max_s < self.base_s:
            raise ValueError(
                f"Backoff: max_s ({self.max_s!r}) must be >= base_s ({self.base_s!r})."
            )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff: jitter must be in [0, 1), got {self.jitter!r}.")

    def delay_s(self, attempt: int, unit: float) -> float:
        """The delay for ``attempt`` given a uniform ``unit`` in ``[0, 1)`` (pure)."""
        return backoff_delay(
            attempt,
            base_s=self.base_s,
            factor=self.factor,
            max_s=self.max_s,
            jitter=self.jitter,
            unit=unit,
        )

    def make_rng(self) -> random.Random:
        """A fresh random source for the jitter (seeded with ``seed``)."""
        return random.Random(self.seed)
