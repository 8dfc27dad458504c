"""What the runs-CLI tests share: the pipelines module they run, its environment, the entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

__all__ = ["PIPES", "cli", "effects", "make_env"]

PIPES = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    from flujo_actors import Flujo, Step

    LOG = Path(os.environ["CLI_LOG"])

    def record(name):
        with LOG.open("a") as f:
            f.write(name + "\\n")

    def first(x: int) -> int:
        record("first")
        return x + 1

    def second(x: int) -> int:
        if os.environ.get("CLI_KILL") == "second":
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("CLI_FAIL"):
            raise RuntimeError("second refused")
        record("second")
        return x * 10

    def third(x: int) -> int:
        record("third")
        return x + 3

    def left(x: int) -> int:
        return x - 1

    def right(x: int) -> int:
        return x + 1

    pipeline = (
        Step.from_callable(first, name="first")
        >> Step.from_callable(second, name="second", max_retries=0)
        >> Step.from_callable(third, name="third")
    )
    fanned = Step.from_callable(first, name="first") >> Step.parallel(
        "fan",
        {
            "l": Step.from_callable(left, name="left"),
            "r": Step.from_callable(right, name="right"),
        },
    )
    runner = Flujo(pipeline)
    not_a_pipeline = 42

    import attrs

    @attrs.define
    class Approval:
        ok: bool

    def ship(answer: Approval) -> str:
        record("ship")
        return "shipped" if answer.ok else "held"

    approval = (
        Step.from_callable(first, name="first")
        >> Step.human_input("approve", "Ship it?", input_model=Approval)
        >> Step.from_callable(ship, name="ship")
    )
    """
)


def make_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Write ``cli_pipes.py`` into ``tmp_path``, importable here and in child processes.

    Returns the environment for child processes (``CLI_LOG`` names the file
    the pipelines' steps record their side effects in).
    """
    (tmp_path / "cli_pipes.py").write_text(PIPES)
    log = tmp_path / "effects.log"
    log.touch()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLI_LOG", str(log))
    sys.modules.pop("cli_pipes", None)
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), environ.get("PYTHONPATH", "")])
    return environ


def cli(env: dict[str, str], *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flujo_actors ARGS`` (or the console script) in a child process."""
    if script:
        exe = Path(sys.executable).with_name("flujo-actors")
        assert exe.exists(), f"the console script is not installed at {exe}"
        command = [str(exe), *args]
    else:
        command = [sys.executable, "-m", "flujo_actors", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def effects(env: dict[str, str]) -> list[str]:
    """The side effects the pipelines' steps recorded, in order."""
    return Path(env["CLI_LOG"]).read_text().split()
