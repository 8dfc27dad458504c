"""Executor fixtures: one session-scoped local Ray cluster for the tests marked ``ray``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

HERE = Path(__file__).resolve().parent

# Read by ray.init: no usage reporting, no token auth on the throwaway cluster.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster (2 CPUs, no dashboard, small object store) for the session.

    Workers get this directory on ``PYTHONPATH`` so the agents and types
    defined in the test modules unpickle by reference, as a user's installed
    package would.
    """
    ray = pytest.importorskip("ray")
    pytest.importorskip("cloudpickle")
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    info = ray.init(
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
