"""The programs in examples/ run and do what their docstrings claim."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_echo_server_serves_200_concurrent_clients_and_survives_poison() -> None:
    assert run_script("echo_server").splitlines() == [
        "197 of 200 clients served; 3 poisoned connections crashed only their own actor; "
        "the server kept serving."
    ]


async def test_echo_server_main_with_a_small_size() -> None:
    summary = await load("echo_server").main(clients=10, poisoned=2)
    assert summary == {"clients": 10, "served": 8, "crashed": 2, "downs": 2}


def test_worker_pool_accounts_for_every_job_under_backpressure() -> None:
    lines = run_script("worker_pool").splitlines()
    assert lines[0].startswith("supervisor 'pool' [one_for_one] running, restarts=")
    assert all(f"actor 'worker-{n}' running" in lines[1 + n] for n in range(4))
    assert len(lines) == 6  # the tree: the pool and its four workers
    assert lines[-1].startswith("1980 of 2000 jobs done, 20 bad jobs dead-lettered, ")


def test_worker_pool_main_with_a_small_size() -> None:
    summary = trio.run(load("worker_pool").main, 50, 2, 10)
    assert summary["done"] == 45
    assert summary["dead_lettered"] == 5
    assert summary["restarts"] == 5  # one crash costs one restart
    assert summary["waited_for_room"] > 0  # the 4-slot mailboxes pushed back
