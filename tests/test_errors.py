"""The error helpers of ``flujo_actors.errors``."""

from __future__ import annotations

import trio

from flujo_actors.errors import only_cancelled


async def _a_cancelled() -> trio.Cancelled:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("the checkpoint was not cancelled")


async def test_only_cancelled_is_true_for_cancellations_alone_or_in_nested_groups() -> None:
    cancelled = await _a_cancelled()
    assert only_cancelled(cancelled)
    assert only_cancelled(
        BaseExceptionGroup("g", [cancelled, BaseExceptionGroup("h", [cancelled])])
    )


async def test_only_cancelled_is_false_when_any_leaf_is_not_a_cancellation() -> None:
    cancelled = await _a_cancelled()
    assert not only_cancelled(ValueError("x"))
    assert not only_cancelled(KeyboardInterrupt())
    assert not only_cancelled(
        BaseExceptionGroup("g", [cancelled, BaseExceptionGroup("h", [ValueError("x")])])
    )
