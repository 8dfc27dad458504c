"""Opt-in step caching through a cache backend."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from flujo_actors import Flujo, InMemoryLRUBackend, Step, UsageLimits


@attrs.define
class Answer:
    text: str
    tags: list[str]
    cost_usd: float = 0.5
    token_counts: int = 9


class Agent:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def run(self, data: str) -> Answer:
        self.calls.append(data)
        return Answer(text=data.upper(), tags=["fresh"])


async def test_a_hit_skips_the_agent_costs_nothing_and_rebuilds_the_value() -> None:
    agent = Agent()
    cache = InMemoryLRUBackend()
    runner = Flujo(Step(name="answer", agent=agent, cache=True), cache_backend=cache)
    first = await runner.run_async("q")
    assert agent.calls == ["q"]
    assert first.total_cost_usd == Decimal("0.5")
    assert "cache_hit" not in first.step_history[0].metadata

    second = await runner.run_async("q")
    assert agent.calls == ["q"]  # not called again
    hit = second.step_history[0]
    assert hit.metadata["cache_hit"] is True
    assert hit.cost_usd == Decimal(0) and hit.token_counts == 0
    assert second.total_cost_usd == Decimal(0) and second.total_tokens == 0
    assert second.output == first.output and type(second.output) is Answer
    # The hit is rebuilt from its serialized form: mutating it changes nothing cached.
    second.output.tags.append("mutated")
    third = await runner.run_async("q")
    assert third.output.tags == ["fresh"]


async def test_key_covers_input_and_step_identity() -> None:
    agent = Agent()
    cache = InMemoryLRUBackend()
    a = Flujo(Step(name="a", agent=agent, cache=True), cache_backend=cache)
    b = Flujo(Step(name="b", agent=agent, cache=True), cache_backend=cache)
    await a.run_async("x")
    await a.run_async("y")
    await b.run_async("x")
    assert agent.calls == ["x", "y", "x"]
    await a.run_async("x")
    await b.run_async("y")
    assert agent.calls == ["x", "y", "x", "y"]


async def test_caching_is_opt_in() -> None:
    agent = Agent()
    cached_backend = InMemoryLRUBackend()
    runner = Flujo(Step(name="a", agent=agent), cache_backend=cached_backend)
    await runner.run_async("x")
    await runner.run_async("x")
    assert agent.calls == ["x", "x"]
    no_backend = Flujo(Step(name="a", agent=agent, cache=True))
    await no_backend.run_async("x")
    assert len(agent.calls) == 3


async def test_cache_hits_do_not_count_against_limits() -> None:
    agent = Agent()
    cache = InMemoryLRUBackend()
    runner = Flujo(
        Step(name="a", agent=agent, cache=True),
        cache_backend=cache,
        usage_limits=UsageLimits(total_cost_usd_limit=0.5),
    )
    for _ in range(5):
        result = await runner.run_async("x")
        assert result.success
    assert agent.calls == ["x"]


async def test_failed_results_are_not_cached() -> None:
    calls: list[str] = []

    async def flaky(data: str) -> str:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return data

    runner = Flujo(
        Step.from_callable(flaky, cache=True, max_retries=0), cache_backend=InMemoryLRUBackend()
    )
    assert not (await runner.run_async("x")).success
    assert (await runner.run_async("x")).output == "x"
    assert (await runner.run_async("x")).step_history[0].metadata == {"cache_hit": True}
    assert calls == ["x", "x"]
