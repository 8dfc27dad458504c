"""Plain, boring modules: one over ~500 lines says why at the top of its docstring.

Issue #13 ("Plain, boring code"): no module over ~500 lines without a reason
stated at its top. The reason is a sentence of the module docstring that
mentions "500 lines" (a comment above the docstring does not count: ``help()``
and the docs show the docstring).
"""

from __future__ import annotations

import ast
import pathlib
from typing import Final

import flujo_actors

PACKAGE_DIR: Final = pathlib.Path(flujo_actors.__file__).parent
#: "About 500": a few lines of slack, so a module is not flagged for one more import.
LIMIT: Final = 510


def _long_modules() -> dict[str, str | None]:
    """``{path: docstring}`` of every module longer than :data:`LIMIT` lines."""
    found: dict[str, str | None] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LIMIT:
            found[str(path.relative_to(PACKAGE_DIR))] = ast.get_docstring(ast.parse(text))
    return found


def test_the_scan_finds_the_long_modules() -> None:
    assert "actors/supervisor.py" in _long_modules()


def test_every_long_module_states_why_in_its_docstring() -> None:
    silent = sorted(
        path for path, doc in _long_modules().items() if doc is None or "500 lines" not in doc
    )
    assert silent == [], (
        f"Modules over {LIMIT} lines without a reason in their docstring: {silent}. Split them, "
        "or say in the docstring why they stay whole ('(Over 500 lines: ...)')."
    )
