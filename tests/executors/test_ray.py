"""RayExecutor specifics: connection ownership, connecting by address, no Ray retries.

The executor contract itself (results, errors, cancellation, worker loss,
concurrency, context) runs against Ray in test_executor_contract.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from flujo_actors import Flujo, Step

if TYPE_CHECKING:
    from pathlib import Path


def triple(x: int) -> int:
    return x * 3


def test_task_options_may_not_turn_on_ray_retries() -> None:
    pytest.importorskip("ray")
    pytest.importorskip("cloudpickle")
    from flujo_actors.executors.ray import RayExecutor

    with pytest.raises(
        ValueError,
        match=r"^RayExecutor: task_options may not set \['max_retries'\]: the step's max_retries "
        r"is the only retry policy \(Ray retries would repeat an agent call behind its back\)\. "
        r"Remove them and set max_retries on the step\.$",
    ):
        RayExecutor(task_options={"max_retries": 3, "num_cpus": 1})


@pytest.mark.ray
async def test_an_existing_connection_is_used_and_left_open(ray_cluster: str) -> None:
    import ray

    from flujo_actors.executors.ray import RayExecutor

    async with RayExecutor(task_options={"num_cpus": 1}) as executor:
        result = await Flujo(Step.from_callable(triple), executor=executor).run_async(5)
        assert result.output == 15
    assert ray.is_initialized()  # we did not call ray.init, so we do not shut it down


@pytest.mark.ray
def test_connects_to_a_given_address_and_disconnects_at_the_end_of_the_run(
    ray_cluster: str, tmp_path: Path
) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import ray
            from flujo_actors import Flujo, Step
            from flujo_actors.executors.ray import RayExecutor

            def add_one(x):
                return x + 1

            if __name__ == "__main__":
                runner = Flujo(Step.from_callable(add_one), executor=RayExecutor(
                    address={ray_cluster!r}, init_options={{"log_to_driver": False}}))
                print(runner.run(41).output, ray.is_initialized())
            """
        )
    )
    env = dict(os.environ)  # the ray_cluster fixture set the Ray variables
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "42 False"
