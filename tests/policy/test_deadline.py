"""The one deadline rule of an attempt (pure: clocks passed in)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from flujo_actors.policy.deadline import (
    attempt_deadline,
    blocked_message,
    expired,
    not_started_message,
    overran,
    timed_out_message,
    to_local,
    to_wall,
    worker_timed_out_message,
)

clock = st.floats(0, 1e6, allow_nan=False)


def test_an_attempt_ends_timeout_s_after_it_started() -> None:
    assert attempt_deadline(10.0, 2.5) == 12.5
    assert attempt_deadline(10.0, None) == math.inf


def test_a_late_return_has_timed_out() -> None:
    assert overran(1.0, 3.5, 2.0) == 2.5
    assert overran(1.0, 3.0, 2.0) == 0.0  # exactly at the deadline: in time
    assert overran(1.0, 100.0, None) == 0.0


@given(deadline=clock, now=clock, wall_now=clock)
def test_a_deadline_crosses_to_the_wall_clock_and_back(
    deadline: float, now: float, wall_now: float
) -> None:
    wall = to_wall(deadline, now, wall_now)
    assert wall is not None
    assert math.isclose(to_local(wall, now, wall_now), deadline, abs_tol=1e-6)
    # the time left is the same on both clocks
    assert math.isclose(wall - wall_now, deadline - now, abs_tol=1e-6)


def test_no_deadline_stays_none() -> None:
    assert to_wall(math.inf, 5.0, 1e9) is None
    assert to_local(None, 5.0, 1e9) == math.inf
    assert not expired(None, 1e9)


def test_an_item_past_its_deadline_is_not_started() -> None:
    assert expired(100.0, 100.0)
    assert expired(100.0, 100.5)
    assert not expired(100.0, 99.5)


def test_messages() -> None:
    assert timed_out_message("s", 1.5) == "step 's' timed out after 1.5 s"
    assert blocked_message("s", 1.0, 2.25) == (
        "step 's' timed out after 1.0 s: the attempt blocked the event loop and returned "
        "after 2.25 s. Blocking code cannot be interrupted; use placement='process', or "
        "trio.to_thread.run_sync inside an async agent."
    )
    assert not_started_message("s", 2) == (
        "step 's' attempt 2 reached its deadline before a worker started it"
    )
    assert (
        worker_timed_out_message("s", 3) == "step 's' attempt 3 reached its deadline in the worker"
    )
