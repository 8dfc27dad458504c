"""Fixtures of the runs-CLI tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.cli.cli_support import make_env  # mypy names test modules by path
else:
    from cli_support import make_env  # pytest puts tests/cli on sys.path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``cli_pipes.py`` importable here and in children; the children's environment."""
    return make_env(tmp_path, monkeypatch)
