"""A BaseException from a streaming agent reaches the ``stream_async`` consumer (#12)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from flujo_actors import Flujo, Step

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Abort(BaseException):
    """A custom BaseException (not an Exception): never retried, never a step failure."""


def _talker(error: BaseException) -> Flujo:
    async def talk(data: Any) -> AsyncIterator[str]:
        yield "hello "
        raise error

    return Flujo(Step.from_callable(talk, name="talk"))


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt("stop"), Abort("abort")], ids=["KeyboardInterrupt", "custom"]
)
async def test_stream_async_raises_an_agents_base_exception_like_run_async(
    error: BaseException,
) -> None:
    with pytest.raises(type(error), match=r"^" + str(error) + r"$"):
        await _talker(error).run_async("x")
    seen: list[Any] = []

    async def consume() -> None:
        async for item in _talker(error).stream_async("x"):
            seen.append(item)

    with pytest.raises(type(error), match=r"^" + str(error) + r"$"):
        await consume()
    assert seen == ["hello "]  # the chunk before the error still arrived


async def test_the_host_loop_survives_a_base_exception_of_a_stream() -> None:
    async def drain() -> None:
        async for _item in _talker(Abort("abort")).stream_async("x"):
            pass

    for _ in range(2):  # the same trio run keeps working afterwards
        with pytest.raises(Abort, match=r"^abort$"):
            await drain()
    result = await Flujo(Step.from_callable(lambda x: x, name="echo")).run_async("ok")
    assert result.output == "ok"
