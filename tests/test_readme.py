"""The README's Python examples run as written (the README must stay true)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fake_llm import FakeLLM  # mypy names test modules by path
else:
    from fake_llm import FakeLLM  # pytest puts tests/ on sys.path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The "Real LLM clients" examples talk to the fake server (tests/fake_llm.py), not the net."""
    server = FakeLLM().start()
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "readme-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "readme-test")
    yield
    server.stop()


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
@pytest.mark.filterwarnings(  # the SDKs leave inner async generators to the GC (see test_real_sdks)
    "ignore:Async generator '(openai|anthropic|httpx|httpcore)[^']*' was garbage collected"
    ":ResourceWarning"
)
def test_readme_python_block_runs(code: str, request: pytest.FixtureRequest) -> None:
    if "AsyncOpenAI" in code or "AsyncAnthropic" in code:
        request.getfixturevalue("llm_server")
    if "PostgresBackend(" in code:  # a fresh schema on the session's throwaway server
        dsn = request.getfixturevalue("pg_dsn")()
        request.getfixturevalue("monkeypatch").setenv("FLUJO_PG_DSN", dsn)
    # dont_inherit: compiled as a user runs it, without this module's __future__ imports.
    exec(compile(code, str(README), "exec", dont_inherit=True), {"__name__": "readme_example"})


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
