"""``idempotency_key``: one key per step position, the same for every attempt and after a resume."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio

from flujo_actors import Flujo, PipelineContext, Step
from flujo_actors.backends.state import InMemoryStateBackend
from flujo_actors.policy.idempotency import idempotency_key


class Crash(BaseException):
    """Stands in for the process dying."""


async def test_attempts_share_a_key_and_positions_differ() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    fails = {"n": 1}

    async def charge(x: int, *, idempotency_key: str) -> int:
        seen["charge"].append(idempotency_key)
        if fails["n"]:
            fails["n"] -= 1
            raise RuntimeError("flaky")
        return x + 1

    def plain(x: int, idempotency_key: str = "") -> int:
        seen["plain"].append(idempotency_key)
        return x

    body = Step.from_callable(charge, max_retries=2) >> Step.from_callable(plain)
    loop = Step.loop_until("L", body, lambda out, ctx: out >= 3, max_loops=5)
    fan = Step.parallel("P", {"a": Step.from_callable(plain), "b": Step.from_callable(plain)})
    result = await Flujo(loop >> fan).run_async(0, run_id="run-1")
    assert result.success
    # Two attempts of iteration 1 share one key; iterations 2 and 3 get their own.
    keys = seen["charge"]
    assert len(keys) == 4 and keys[0] == keys[1]
    assert len({keys[1], keys[2], keys[3]}) == 3
    assert keys[0] == idempotency_key("run-1", ("L", 1, "charge"))
    assert keys[3] == idempotency_key("run-1", ("L", 3, "charge"))
    # Every position of `plain` (3 iterations + 2 branches) has its own key.
    assert len(set(seen["plain"])) == 5
    assert all(len(k) == 64 for k in seen["plain"])


async def test_a_resumed_position_gets_the_key_it_had_before_the_crash() -> None:
    keys: list[str] = []
    crash = {"on": True}

    async def pay(x: int, *, idempotency_key: str, context: PipelineContext) -> int:
        keys.append(idempotency_key)
        if crash["on"]:
            raise Crash()
        return x

    backend = InMemoryStateBackend()
    pipeline = Step.from_callable(lambda x: x, name="first") >> Step.from_callable(pay)
    with pytest.raises(Crash):
        await Flujo(pipeline, state_backend=backend).run_async(1, run_id="r")
    crash["on"] = False
    result = await Flujo(pipeline, state_backend=backend).resume_async("r")
    assert result.success
    assert keys == [idempotency_key("r", ("pay",))] * 2


async def test_an_object_agent_and_a_stream_get_keys_too() -> None:
    got: list[str] = []

    class Agent:
        async def run(self, data: Any, *, idempotency_key: str) -> Any:
            got.append(idempotency_key)
            return data

    async def chunks(data: Any, *, idempotency_key: str) -> Any:
        got.append(idempotency_key)
        yield "a"

    result = await Flujo(
        Step.from_callable(Agent(), name="obj") >> Step.from_callable(chunks, name="gen")
    ).run_async("x", run_id="r2")
    assert result.output == ["a"] or result.output == "a"
    assert got == [idempotency_key("r2", ("obj",)), idempotency_key("r2", ("gen",))]


async def test_an_agent_on_the_process_pool_gets_the_same_key() -> None:
    result = await Flujo(Step.from_callable(_keyed, name="remote", placement="process")).run_async(
        5, run_id="r3"
    )
    assert result.output == idempotency_key("r3", ("remote",))


def _keyed(x: int, *, idempotency_key: str) -> str:
    return idempotency_key


async def test_the_key_is_passed_only_to_agents_that_declare_it() -> None:
    async def kw(x: int, **kwargs: Any) -> Any:
        return sorted(kwargs)

    result = await Flujo(Step.from_callable(kw)).run_async(1)
    assert result.output == ["context", "resources"]
    await trio.lowlevel.checkpoint()
