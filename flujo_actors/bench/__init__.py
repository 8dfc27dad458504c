"""The flujo_actors stress-benchmark harness (``python -m flujo_actors.bench``).

Scenario modules (``benchmarks/bench_*.py``) declare what to measure with the types
re-exported here::

    from flujo_actors.bench import Scenario, Target, Workload, baselines

    def trivial_pipeline(size: int) -> Workload:
        runner = Flujo(Pipeline(steps=[...size trivial steps...]))

        async def once() -> None:
            result = await runner.run_async(0)
            expect(result.success, "the pipeline failed")

        return Workload(once, ops=size)

    SCENARIOS = [
        Scenario(
            name="sequential.trivial",
            measure=trivial_pipeline,
            baseline=baselines.chain,
            baseline_label="N tasks chained by memory channels",
            unit="us/step",
            sizes=(10, 100, 1000),
            targets=(Target(max=25.0),),
        ),
    ]

Importing this package is cheap: it never imports rich, matplotlib or the scenarios,
and ``import flujo_actors`` never imports it.
"""

from __future__ import annotations

from . import baselines as baselines
from .harness import BenchError as BenchError
from .harness import MeasureOptions as MeasureOptions
from .harness import Prepare as Prepare
from .harness import Scenario as Scenario
from .harness import Target as Target
from .harness import Unavailable as Unavailable
from .harness import Unit as Unit
from .harness import Workload as Workload
from .harness import expect as expect
from .report import SCHEMA_VERSION as SCHEMA_VERSION
from .report import CaseResult as CaseResult
from .report import Report as Report

__all__ = [
    "SCHEMA_VERSION",
    "BenchError",
    "CaseResult",
    "MeasureOptions",
    "Prepare",
    "Report",
    "Scenario",
    "Target",
    "Unavailable",
    "Unit",
    "Workload",
    "baselines",
    "expect",
]
