"""What machine and software a report was measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .report import MachineInfo

__all__ = ["cpu_model", "git_state", "load_average", "machine_info", "package_version"]


def package_version(name: str) -> str | None:
    """The installed distribution version of ``name``, or the module's ``__version__``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(name.replace("-", "_"))
        version = getattr(module, "__version__", None)
        return version if isinstance(version, str) else None


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """``(commit, has uncommitted changes to tracked files)`` of the repo at ``directory``."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(dirty)


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_info(*, load_before: float | None = None) -> MachineInfo:
    """Describe this machine, the interpreter, the key libraries and the git commit.

    The commit is that of the repository holding the flujo_actors package (falling
    back to the current directory's). ``load_before`` is the load average taken
    before the run; the load now is recorded as ``load_after``.
    """
    package_dir = Path(__file__).resolve().parents[2]
    commit, dirty = git_state(package_dir)
    if commit is None:
        commit, dirty = git_state(Path.cwd())
    return MachineInfo(
        cpu_count=os.cpu_count(),
        cpu_model=cpu_model(),
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(terse=True),
        trio=package_version("trio"),
        attrs=package_version("attrs"),
        cattrs=package_version("cattrs"),
        flujo_actors=package_version("flujo-actors") or package_version("flujo_actors"),
        git_commit=commit,
        git_dirty=dirty,
        load_before=load_before,
        load_after=load_average(),
    )
