"""OpenTelemetry export: spans captured with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from typing import Any

# The dev extra installs the SDK: a missing install fails here, never skips.
import opentelemetry.sdk.trace as sdk_trace
import opentelemetry.sdk.trace.export as sdk_export
import opentelemetry.sdk.trace.export.in_memory_span_exporter as in_memory
import opentelemetry.trace as otel_trace
import pytest
import trio

from flujo_actors import Flujo, Step
from flujo_actors.telemetry.otel import OTelHook
from flujo_actors.testing.agents import FlakyAgent, UsageOutput


@pytest.fixture
def exporter() -> Any:
    return in_memory.InMemorySpanExporter()


@pytest.fixture
def provider(exporter: Any) -> Any:
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(sdk_export.SimpleSpanProcessor(exporter))
    return provider


def _by_name(spans: Any) -> dict[str, Any]:
    return {s.name: s for s in spans}


async def test_each_step_branch_and_attempt_is_an_otel_span(
    autojump_clock: trio.abc.Clock, exporter: Any, provider: Any
) -> None:
    flaky = FlakyAgent(1, result=UsageOutput("ok", cost_usd=0.25, token_counts=10))

    async def slow(data: Any) -> str:
        await trio.sleep(2)
        return "done"

    fan = Step.parallel("fan", {"a": Step.from_callable(slow, name="a1")})
    pipeline = Step.from_callable(flaky.run, name="flaky", max_retries=1) >> fan
    result = await Flujo(pipeline, hooks=[OTelHook(provider)]).run_async(0)
    assert result.success
    spans = _by_name(exporter.get_finished_spans())
    assert set(spans) == {"pipeline", "flaky", "attempt 1", "attempt 2", "fan", "a", "a1"}
    root = spans["pipeline"]
    assert root.parent is None
    parent_of = {
        name: next((p for p, s in spans.items() if s.context.span_id == span.parent.span_id), None)
        for name, span in spans.items()
        if span.parent is not None
    }
    assert parent_of == {
        "flaky": "pipeline",
        "attempt 1": "flaky",
        "attempt 2": "flaky",
        "fan": "pipeline",
        "a": "fan",
        "a1": "a",
    }
    assert len({s.context.trace_id for s in spans.values()}) == 1
    flaky_span = spans["flaky"]
    assert flaky_span.attributes["flujo.kind"] == "agent"
    assert flaky_span.attributes["flujo.path"] == "flaky"
    assert flaky_span.attributes["flujo.outcome"] == "success"
    assert flaky_span.attributes["flujo.attempts"] == 2
    assert flaky_span.attributes["flujo.usage.cost_usd"] == 0.25
    assert flaky_span.attributes["flujo.usage.tokens"] == 10
    assert root.attributes["flujo.run_id"] == result.run_id
    assert root.attributes["flujo.usage.cost_usd"] == float(Decimal("0.25"))
    assert spans["attempt 1"].status.status_code == otel_trace.StatusCode.ERROR
    assert spans["attempt 1"].attributes["flujo.feedback"] == "RuntimeError: flaky failure"
    # Trio's clock maps to the wall clock with one offset: durations are exact.
    a1 = spans["a1"]
    assert a1.end_time - a1.start_time == 2_000_000_000


async def test_a_failed_step_has_an_error_status(exporter: Any, provider: Any) -> None:
    bad = Step.from_callable(FlakyAgent(5, error=ValueError("nope")).run, name="bad", max_retries=0)
    result = await Flujo(bad, hooks=[OTelHook(provider)]).run_async(0)
    assert not result.success
    spans = _by_name(exporter.get_finished_spans())
    assert spans["bad"].status.status_code == otel_trace.StatusCode.ERROR
    assert spans["bad"].status.description == "ValueError: nope"
    assert spans["pipeline"].attributes["flujo.outcome"] == "failure"


async def test_the_agent_runs_inside_its_step_span(exporter: Any, provider: Any) -> None:
    tracer = provider.get_tracer("user-code")

    async def agent(data: Any) -> Any:
        with tracer.start_as_current_span("http call"):
            return data

    await Flujo(Step.from_callable(agent, name="fetch"), hooks=[OTelHook(provider)]).run_async(0)
    spans = _by_name(exporter.get_finished_spans())
    assert spans["http call"].parent.span_id == spans["fetch"].context.span_id
    # The step's span is not left current after the step: the next step is not its child.
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


async def test_the_run_span_is_a_child_of_the_callers_span(exporter: Any, provider: Any) -> None:
    tracer = provider.get_tracer("user-code")

    async def agent(data: Any) -> Any:
        return data

    with tracer.start_as_current_span("request"):
        await Flujo(Step.from_callable(agent, name="s"), hooks=[OTelHook(provider)]).run_async(0)
    spans = _by_name(exporter.get_finished_spans())
    assert spans["pipeline"].parent.span_id == spans["request"].context.span_id


def test_importing_the_library_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, flujo_actors, flujo_actors.telemetry.otel, flujo_actors.hooks, "
        "flujo_actors.tracing, flujo_actors.introspection\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
