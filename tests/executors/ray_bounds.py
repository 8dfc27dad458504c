"""RayExecutors for tests that cancel Ray work or wait for an actor's restart.

RayExecutor's real-time bounds (``cancel_timeout_s``, ``restart_timeout_s``) are
sized for a cluster with its own machines. On a loaded 2-core CI machine Ray's
confirmation that a force-cancelled worker stopped can come later than the 10 s
default, and the test would see ``ExecutorLost`` instead of the cancellation it
is about. Here the bounds are hang guards only: far beyond what load costs, and
below the per-test guard (``conftest.RAY_TEST_TIMEOUT_S``), so a wait Ray never
ends still fails with the executor's own message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flujo_actors.executors.ray import RayExecutor

BOUND_S = 120.0


def bounded_ray_executor(**options: Any) -> RayExecutor:
    """``RayExecutor(**options)`` with both real-time bounds at :data:`BOUND_S`."""
    from flujo_actors.executors.ray import RayExecutor

    return RayExecutor(cancel_timeout_s=BOUND_S, restart_timeout_s=BOUND_S, **options)
