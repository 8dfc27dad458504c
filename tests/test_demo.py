"""`make demo` keeps working and shows what it claims (and checks each claim itself)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import pytest

from flujo_actors import Flujo, PipelineResult, demo

if TYPE_CHECKING:
    from pathlib import Path


async def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    await demo.main()
    out = capsys.readouterr().out
    assert "success=True" in out
    assert "output: PUBLICADO: Draft v3 about trio (3 facts)" in out
    assert "attempts=2" in out  # the flaky publisher succeeded on retry
    assert "fallback_triggered=True" in out
    assert "iterations=3 exit_reason=condition" in out
    assert "total: $0.041 / 1260 tokens" in out
    assert "research: 3 searches were running at the same time" in out
    # What ran in each process, separately: the resume did not re-run ingest_0/1.
    assert re.search(
        r"^ingest, worker process: ran \['ingest_0', 'ingest_1'\], then was killed in "
        r"ingest_2 \(exit status -9\); its state is in runs\.db$",
        out,
        re.MULTILINE,
    )
    assert re.search(
        r"^ingest, this process: resume_async ran \['ingest_2', 'ingest_3'\] \(ingest_0 and "
        r"ingest_1 not again\), output 40, success=True$",
        out,
        re.MULTILINE,
    )
    assert "ran ingest_" not in out.replace("resume_async ran", "")  # no stray step output


async def test_the_demo_refuses_to_claim_a_resume_that_re_ran_completed_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def rerun_everything(self: Flujo, run_id: str, **options: Any) -> PipelineResult:
        return await self.run_async(0, run_id=f"{run_id}-again")

    monkeypatch.setattr(Flujo, "resume_async", rerun_everything)
    with pytest.raises(
        demo.DemoClaimFailed,
        match=(
            r"^demo claim does not hold: the resume ran only ingest_2, 3: "
            r"\['ingest_0', 'ingest_1', 'ingest_2', 'ingest_3'\]$"
        ),
    ):
        await demo.persistence_demo(os.fspath(tmp_path / "runs.db"))
    assert "resume_async ran" not in capsys.readouterr().out  # nothing false was printed


async def test_the_demo_refuses_to_claim_concurrency_it_did_not_see() -> None:
    overlap = demo.Overlap()
    runner = Flujo(demo.build_pipeline(overlap), context_model=demo.ResearchContext)
    result = await runner.run_async("What is trio?")
    demo.check_research(result, overlap)  # every claim holds
    overlap.most = 1  # as if the searches had run one after another
    with pytest.raises(
        demo.DemoClaimFailed,
        match=r"^demo claim does not hold: all three searches ran at once \(1\)$",
    ):
        demo.check_research(result, overlap)
