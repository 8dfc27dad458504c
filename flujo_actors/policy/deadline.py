"""The one deadline rule of an attempt, inline and on every executor (pure: clocks passed in).

* An attempt of a step with ``timeout_s`` must end ``timeout_s`` seconds
  after it started (:func:`attempt_deadline`, on trio's clock); without one
  it runs under the caller's deadline only.
* Blocking code (a sync agent, ``time.sleep``) cannot be interrupted: an
  attempt that returns after its deadline has timed out all the same
  (:func:`overran`); its output is discarded.
* An attempt sent to an executor carries its deadline as wall-clock time
  (:func:`to_wall`: trio's clock does not cross a process boundary), and the
  worker turns it back into its own clock (:func:`to_local`). A worker that
  picks an item up after its deadline does not call the agent
  (:func:`expired`); an async agent in a worker is cancelled at it.

The messages of each case live here too, so a timeout reads the same
wherever the attempt ran.
"""

from __future__ import annotations

import math

__all__ = [
    "attempt_deadline",
    "blocked_message",
    "expired",
    "not_started_message",
    "overran",
    "timed_out_message",
    "to_local",
    "to_wall",
    "worker_timed_out_message",
]


def attempt_deadline(started: float, timeout_s: float | None) -> float:
    """The deadline of an attempt that started at ``started`` (``math.inf``: none of its own)."""
    return math.inf if timeout_s is None else started + timeout_s


def overran(started: float, finished: float, timeout_s: float | None) -> float:
    """How long an attempt took if it returned after its deadline, else 0.0."""
    if timeout_s is None:
        return 0.0
    took = finished - started
    return took if took > timeout_s else 0.0


def to_wall(deadline: float, now: float, wall_now: float) -> float | None:
    """A deadline on a local clock (now ``now``) as wall-clock time (now ``wall_now``).

    None for no deadline (``math.inf``).
    """
    if math.isinf(deadline):
        return None
    return wall_now + (deadline - now)


def to_local(wall_deadline: float | None, now: float, wall_now: float) -> float:
    """A wall-clock deadline as a deadline on a local clock (``math.inf`` for None)."""
    if wall_deadline is None:
        return math.inf
    return now + (wall_deadline - wall_now)


def expired(wall_deadline: float | None, wall_now: float) -> bool:
    """Whether a work item's deadline has passed (a worker must not start it then)."""
    return wall_deadline is not None and wall_now >= wall_deadline


def timed_out_message(step: str, timeout_s: float | None) -> str:
    """An attempt cancelled at its deadline."""
    return f"step {step!r} timed out after {timeout_s} s"


def blocked_message(step: str, timeout_s: float | None, took: float) -> str:
    """An attempt that blocked the event loop and returned after its deadline."""
    return (
        f"step {step!r} timed out after {timeout_s} s: the attempt blocked the event loop "
        f"and returned after {took:.3g} s. Blocking code cannot be interrupted; use "
        "placement='process', or trio.to_thread.run_sync inside an async agent."
    )


def not_started_message(step: str, attempt: int) -> str:
    """A work item that reached its deadline before a worker started it."""
    return f"step {step!r} attempt {attempt} reached its deadline before a worker started it"


def worker_timed_out_message(step: str, attempt: int) -> str:
    """A work item cancelled at its deadline in the worker."""
    return f"step {step!r} attempt {attempt} reached its deadline in the worker"
