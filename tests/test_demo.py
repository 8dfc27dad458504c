"""`make demo` keeps working and shows what it claims."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flujo_actors import demo

if TYPE_CHECKING:
    import pytest


async def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    await demo.main()
    out = capsys.readouterr().out
    assert "success=True" in out
    assert "output: PUBLICADO: Draft v3 about trio (3 facts)" in out
    assert "attempts=2" in out  # the flaky publisher succeeded on retry
    assert "fallback_triggered=True" in out
    assert "iterations=3 exit_reason=condition" in out
    assert "total: $0.041 / 1260 tokens" in out
    assert "ran ['ingest_0', 'ingest_1', 'ingest_2', 'ingest_3'], output 40, success=True" in out
