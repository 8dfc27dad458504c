"""Executor fixtures: one session-scoped local Ray cluster for the tests marked ``ray``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

HERE = Path(__file__).resolve().parent

# Read by ray.init: no usage reporting, no token auth on the throwaway cluster.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _inapplicable(item: pytest.Item) -> bool:
    """Executor-contract cases that do not exist for the inline executor.

    Tests about worker processes (they take the ``remote`` fixture), and a timeout
    of a blocking sync agent (it cannot be interrupted in this process).
    """
    callspec = getattr(item, "callspec", None)
    if callspec is None or callspec.params.get("kind") != "inline":
        return False
    fixtures: Sequence[str] = getattr(item, "fixturenames", ())
    agent = callspec.params.get("agent")
    return "remote" in fixtures or getattr(agent, "__name__", None) == "stuck_sync"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Not generated rather than skipped: a skip in `pytest -rs` must mean something
    # a user relies on did not run.
    dropped = [item for item in items if _inapplicable(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _inapplicable(item)]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster (2 CPUs, no dashboard, small object store) for the session.

    Workers get this directory on ``PYTHONPATH`` so the agents and types
    defined in the test modules unpickle by reference, as a user's installed
    package would.
    """
    import ray  # make test-ray installs the ray extra: a missing install fails, never skips

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    info: Any = ray.init(  # a RayContext (BaseContext in the stubs)
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}},
    )
    try:
        yield str(info.address_info["gcs_address"])
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
