"""A hung Ray test fails the session with the stacks of its trio tasks, never stalls CI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

HUNG = """
import pytest
import trio


async def wait_for_ray_forever() -> None:
    await trio.sleep_forever()


@pytest.mark.ray
@pytest.mark.timeout(1, method="thread")
async def test_hangs() -> None:
    await wait_for_ray_forever()
"""


def test_a_hung_ray_test_fails_with_its_trio_stacks(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(textwrap.dedent(HUNG))
    # This directory's conftest (the guard) loaded as a plugin into a pytest run of the file.
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
         "-o", "trio_mode=true", "-o", "markers=ray: a Ray test",
         "-m", "ray", str(tmp_path / "test_hung.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "test_hung.py::test_hangs still running after 1.0 s" in out.stdout
    # The trio task's own stack, down to where it waits (the thread dump shows only the loop).
    assert f"{tmp_path / 'test_hung.py'}:7 in wait_for_ray_forever" in out.stdout
    assert "Timeout" in out.stdout
