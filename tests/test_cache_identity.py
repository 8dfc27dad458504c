"""Cache keys fingerprint the agent's state: different configurations never share entries."""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from typing import Any

import attrs
import pytest

from flujo_actors import Flujo, InMemoryLRUBackend, PipelineDefinitionError, Step, step
from flujo_actors.policy.cache_key import agent_state_digest, step_cache_identity


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.calls = 0

    async def run(self, text: str) -> str:
        self.calls += 1
        return f"{text} in {self.lang}"

    async def translate(self, text: str) -> str:
        return f"{text} -> {self.lang}"


def make(n: int) -> Any:
    async def add(x: int) -> int:
        return x + n

    return add


async def add_n(x: int, n: int) -> int:
    return x + n


def with_default(n: int) -> Any:
    async def add(x: int, n: int = n) -> int:
        return x + n

    return add


@attrs.frozen
class AttrsAgent:
    factor: int

    async def run(self, x: int) -> int:
        return x * self.factor


@dataclasses.dataclass
class DataAgent:
    factor: int

    async def run(self, x: int) -> int:
        return x * self.factor


async def outputs(agents: list[Any], data: Any) -> list[Any]:
    """Run each agent in a cached step of the same name, all on one cache."""
    cache = InMemoryLRUBackend()
    out = []
    for agent in agents:
        runner = Flujo(Step.from_callable(agent, name="work", cache=True), cache_backend=cache)
        out.append((await runner.run_async(data)).output)
    return out


@pytest.mark.parametrize(
    ("agents", "data", "expected"),
    [
        ([Translator("fr"), Translator("de")], "hi", ["hi in fr", "hi in de"]),
        ([make(2), make(3)], 10, [12, 13]),
        ([functools.partial(add_n, n=2), functools.partial(add_n, n=3)], 10, [12, 13]),
        (
            [Translator("fr").translate, Translator("de").translate],
            "hi",
            ["hi -> fr", "hi -> de"],
        ),
        ([with_default(2), with_default(3)], 10, [12, 13]),
        ([AttrsAgent(2), AttrsAgent(3)], 10, [20, 30]),
        ([DataAgent(2), DataAgent(3)], 10, [20, 30]),
    ],
    ids=["instances", "closures", "partials", "bound-methods", "defaults", "attrs", "dataclass"],
)
async def test_different_agent_configurations_never_share_entries(
    agents: list[Any], data: Any, expected: list[Any]
) -> None:
    assert await outputs(agents, data) == expected


async def test_equal_configurations_still_share_entries() -> None:
    first, second = Translator("fr"), Translator("fr")
    assert await outputs([first, second], "hi") == ["hi in fr", "hi in fr"]
    assert (first.calls, second.calls) == (1, 0)  # the second answered from the cache


async def test_the_fingerprint_is_taken_when_the_step_is_built() -> None:
    # The agent's own counter changes with each call; its entries stay valid.
    agent = Translator("fr")
    runner = Flujo(Step.from_callable(agent, cache=True), cache_backend=InMemoryLRUBackend())
    await runner.run_async("a")
    await runner.run_async("a")
    assert agent.calls == 1


class WithLock:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    async def run(self, x: int) -> int:
        return x


def test_an_agent_whose_state_cannot_be_fingerprinted_is_refused_at_build_time() -> None:
    message = (
        "Step 'locked': cache=True must tell this agent's configuration apart from others, "
        "but its state cannot be fingerprinted: WithLock.lock is a _thread.lock (not "
        "serializable). Pass cache_key='...' (a name for the configuration that you vouch "
        "for: steps of the same name and agent with equal cache_key share cache entries), "
        "or drop cache=True."
    )
    with pytest.raises(PipelineDefinitionError, match=f"^{re.escape(message)}$"):
        Step.from_callable(WithLock(), name="locked", cache=True)
    lock = threading.Lock()

    async def closes_over_a_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'closes_over_a_lock': cache=True must tell .* fingerprinted: "
        r".*closes_over_a_lock closure variable 'lock' is a _thread\.lock \(not serializable\)\. ",
    ):
        Step.from_callable(closes_over_a_lock, cache=True)
    Step.from_callable(WithLock(), name="uncached")  # without cache=True nothing is needed


async def test_cache_key_names_a_configuration_the_user_vouches_for() -> None:
    cache = InMemoryLRUBackend()
    calls: list[str] = []

    class Client:
        def __init__(self, lang: str) -> None:
            self.lock = threading.Lock()
            self.lang = lang

        async def run(self, x: str) -> str:
            calls.append(self.lang)
            return f"{x}/{self.lang}"

    async def go(agent: Any, key: str) -> Any:
        s = Step.from_callable(agent, name="t", cache=True, cache_key=key)
        return (await Flujo(s, cache_backend=cache).run_async("x")).output

    assert await go(Client("fr"), "fr-v1") == "x/fr"
    assert await go(Client("de"), "de-v1") == "x/de"  # another key: its own entries
    assert await go(Client("fr"), "fr-v1") == "x/fr"  # the same key: a hit
    assert calls == ["fr", "de"]

    @step(cache=True, cache_key="fr-v1")
    async def decorated(x: str) -> str:
        return x

    assert (
        decorated.cache_identity == f"decorated|{__name__}:{decorated.agent.__qualname__}|key:fr-v1"
    )


def test_cache_key_is_checked_when_the_step_is_built() -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'f': cache_key='v1' has no effect without cache=True; pass cache=True "
        r"as well \(or drop cache_key\)\.$",
    ):
        Step.from_callable(f, cache_key="v1")
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'f': cache_key must be a non-empty string naming the agent's "
        r"configuration \(e\.g\. 'translate-fr-v1'\), got ' '\.$",
    ):
        Step.from_callable(f, cache=True, cache_key=" ")
    with pytest.raises(PipelineDefinitionError, match=r"got 3\.$"):
        Step.from_callable(f, cache=True, cache_key=3)  # type: ignore[arg-type]


class Tooled:
    def __init__(self, tools: list[Any]) -> None:
        self.tools = tools
        self.me = self  # a reference cycle

    async def run(self, x: int) -> int:
        return x


def test_the_state_walk_covers_nested_callables_and_survives_cycles() -> None:
    a = agent_state_digest(Tooled([make(2), len]))
    assert a == agent_state_digest(Tooled([make(2), len]))
    assert a != agent_state_digest(Tooled([make(3), len]))
    assert a != agent_state_digest(Tooled([make(2), abs]))
    assert agent_state_digest(make(2)) != agent_state_digest(with_default(2))


def test_oversized_state_is_refused_with_the_fix() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'big': cache=True must tell .* fingerprinted: Tooled\.tools\[\d+\] is "
        r"past 10,000 values: the state is too large\. Pass cache_key=",
    ):
        step_cache_identity("big", Tooled([1] * 20_000))


def test_identities_name_the_step_and_the_agent_and_never_an_address() -> None:
    identity = step_cache_identity("work", Translator("fr"))
    assert re.fullmatch(rf"work\|{re.escape(__name__)}:Translator\|state:[0-9a-f]{{64}}", identity)
