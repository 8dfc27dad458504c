"""What ``make test`` installs: every test a user relies on runs, none skips for a missing extra."""

from __future__ import annotations

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _installed_extras(target: str) -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = re.search(rf"^{re.escape(target)}:.*?(?=^\S)", makefile, re.MULTILINE | re.DOTALL)
    assert rule is not None, target
    extras = re.findall(r"pip install -q -e '\.\[([a-z,]+)\]'", rule.group(0))
    return {extra for group in extras for extra in group.split(",")}


def test_make_install_installs_the_extras_the_fast_suite_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert {"dev", "process", "bench", "postgres"} <= _installed_extras("$(STAMP)")
    assert {"dev", "process", "bench", "postgres", "ray"} <= _installed_extras("$(RAY_STAMP)")
    # The harness's live display and its --plot output are what the bench extra is for.
    assert {re.split(r"[<>=]", r)[0] for r in extras["bench"]} == {"rich", "matplotlib"}


def test_no_test_skips_because_an_extra_is_missing() -> None:
    # A missing install must fail loudly: make test installs every extra the tests use.
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != pathlib.Path(__file__).name
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "importorskip" in line
    ]
    assert offenders == [], (
        "make test installs every extra the tests use (Makefile, $(STAMP)): import the "
        "module instead of pytest.importorskip, and add its extra there if it is new"
    )
