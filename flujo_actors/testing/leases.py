"""Conformance checks for run leases (:class:`~flujo_actors.backends.leasing.LeasingStateBackend`).

A sibling of :mod:`flujo_actors.testing.backends` (which checks the state
protocol every backend implements); call both for a leasing backend::

    async def test_my_leases():
        def new_store():
            dsn = make_empty_database()
            return lambda lease_s: MyBackend(dsn, lease_s=lease_s)

        await check_leases(new_store)

``new_store()`` makes a new, empty store and returns a function that opens
a new backend object on it with a lease of ``lease_s`` seconds; two backend
objects are two owners, as two processes would be. Expiry takes real time:
the checks use leases of a fraction of a second and wait for the store to
report them expired (a hang guard of 30 s, never a timing assertion).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from ..backends.leasing import LeasingStateBackend
from ..backends.state import PositionRecord
from ..errors import LeaseLostError, RunLeasedError
from .backends import _checkpoint, _expect

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LeaseStoreFactory", "check_leases"]

BackendOpener: TypeAlias = Callable[[float], LeasingStateBackend]
LeaseStoreFactory: TypeAlias = Callable[[], "BackendOpener | Awaitable[BackendOpener]"]
"""Makes a new, empty store; returns ``open(lease_s) -> backend`` on it (sync or async)."""

_LIVE = 30.0  # a lease that cannot expire during a check
_SHORT = 0.3  # a lease the checks wait out


async def _claim_when_expired(check: str, backend: LeasingStateBackend, fp: str) -> list[str]:
    with trio.move_on_after(30):
        while True:
            claimed = await backend.claim_expired(fp)
            if claimed:
                return claimed
            await trio.sleep(0.02)
    _expect(check, False, f"claim_expired({fp!r}) found nothing within 30 s of a lease expiring")
    return []


async def _check_live_lease(open_: BackendOpener) -> None:
    check = "live_lease"
    owner, other = open_(_LIVE), open_(_LIVE)
    try:
        await owner.create_run(_checkpoint("r", pipeline_fingerprint="fp"))
        claimed = await other.claim_expired("fp")
        _expect(check, claimed == [], f"claim_expired took a live run: {claimed!r}")
        try:
            await other.claim_run("r")
        except RunLeasedError:
            pass
        else:
            _expect(check, False, "claim_run of a run leased by a live owner did not raise")
        await owner.renew_lease("r")
        await owner.save_state("r", _checkpoint("r", next_step_index=1))  # still ours
        await owner.save_positions([PositionRecord(run_id="r", position="p", record={"n": 1})])
        # Another owner cannot write a run it never claimed, positions included.
        await _refused(
            check,
            "a write of a run leased by another live owner",
            {
                "save_state": lambda: other.save_state("r", _checkpoint("r", next_step_index=7)),
                "save_positions": lambda: other.save_positions(
                    [PositionRecord(run_id="r", position="p", record={"n": 7})]
                ),
            },
        )
        snapshot = await owner.load_state("r")
        positions = await owner.load_positions("r")
        _expect(
            check,
            snapshot is not None and snapshot.next_step_index == 1 and positions == {"p": {"n": 1}},
            f"a refused write changed the owner's run: {snapshot!r}, positions {positions!r}",
        )
    finally:
        await owner.aclose()
        await other.aclose()


async def _check_takeover(open_: BackendOpener) -> None:
    check = "takeover"
    dead, other = open_(_SHORT), open_(_LIVE)
    try:
        await dead.create_run(_checkpoint("r", pipeline_fingerprint="fp"))
        await dead.create_run(_checkpoint("elsewhere", pipeline_fingerprint="other-fp"))
        await dead.save_positions([PositionRecord(run_id="r", position="p", record={"n": 0})])
        claimed = await _claim_when_expired(check, other, "fp")
        _expect(check, claimed == ["r"], f"claim_expired('fp') claimed {claimed!r}, not ['r']")
        await other.save_positions([PositionRecord(run_id="r", position="p", record={"n": 1})])

        def position(name: str, n: int) -> list[PositionRecord]:
            return [PositionRecord(run_id="r", position=name, record={"n": n})]

        await _refused(
            check,
            "a write by the owner that lost the lease",
            {
                "renew_lease": lambda: dead.renew_lease("r"),
                "save_state": lambda: dead.save_state("r", _checkpoint("r", next_step_index=9)),
                "save_states": lambda: dead.save_states(
                    [_checkpoint("r", status="completed", output=9)]
                ),
                "save_positions (a replaced position)": lambda: dead.save_positions(
                    position("p", 9)
                ),
                "save_positions (a new position)": lambda: dead.save_positions(position("q", 9)),
            },
        )
        snapshot = await other.load_state("r")
        positions = await other.load_positions("r")
        _expect(
            check,
            snapshot is not None
            and snapshot.next_step_index == 0
            and snapshot.status == "running"
            and positions == {"p": {"n": 1}},
            f"a write of the owner that lost the lease changed the run: {snapshot!r}, "
            f"positions {positions!r}",
        )
        await other.save_state("r", _checkpoint("r", next_step_index=1))
        again = await other.claim_expired("fp")
        _expect(check, again == [], f"a claimed run was claimed again: {again!r}")
    finally:
        await dead.aclose()
        await other.aclose()


async def _refused(check: str, what: str, calls: dict[str, Callable[[], Awaitable[None]]]) -> None:
    """Expect every call to raise LeaseLostError."""
    for name, call in calls.items():
        try:
            await call()
        except LeaseLostError:
            pass
        else:
            _expect(check, False, f"{name}: {what} did not raise LeaseLostError")


async def _check_not_recoverable(open_: BackendOpener) -> None:
    check = "not_recoverable"
    dead, other = open_(_SHORT), open_(_LIVE)
    try:
        await dead.create_run(_checkpoint("paused", pipeline_fingerprint="fp"))
        await dead.save_state("paused", _checkpoint("paused", status="paused"))
        await dead.create_run(_checkpoint("done", pipeline_fingerprint="fp"))
        await dead.save_state("done", _checkpoint("done", status="completed"))
        await dead.create_run(_checkpoint("released", pipeline_fingerprint="fp"))
        await dead.release_run("released")
        await dead.create_run(_checkpoint("marker", pipeline_fingerprint="fp"))
        claimed = await _claim_when_expired(check, other, "fp")
        _expect(
            check,
            claimed == ["marker"],
            f"claim_expired claimed {claimed!r}; paused, finished and released runs must wait",
        )
        await other.claim_run("released")  # an explicit resume may take it
    finally:
        await dead.aclose()
        await other.aclose()


async def _check_concurrent_claims(open_: BackendOpener) -> None:
    check = "concurrent_claims"
    dead = open_(_SHORT)
    claimers = [open_(_LIVE) for _ in range(3)]
    got: list[list[str]] = [[] for _ in claimers]
    try:
        for i in range(10):
            await dead.create_run(_checkpoint(f"r{i}", pipeline_fingerprint="fp"))
        await _wait_expired(check, dead, "r9")

        async def claim(index: int) -> None:
            got[index] = await claimers[index].claim_expired("fp")

        async with trio.open_nursery() as nursery:
            for index in range(len(claimers)):
                nursery.start_soon(claim, index)
        every: Sequence[str] = [run_id for ids in got for run_id in ids]
        _expect(
            check,
            sorted(every) == sorted(f"r{i}" for i in range(10)),
            f"three concurrent claim_expired calls got {got!r}; each run exactly once",
        )
    finally:
        await dead.aclose()
        for claimer in claimers:
            await claimer.aclose()


async def _wait_expired(check: str, backend: LeasingStateBackend, run_id: str) -> None:
    """Wait until the leases ``backend`` took so far expired.

    A probe run, leased after them for the same time, is claimed (under its
    own fingerprint) once it expired: by then so had the others.
    """
    probe = f"{run_id}-expiry-probe"
    await backend.create_run(_checkpoint(probe, pipeline_fingerprint="probe-fp"))
    await _claim_when_expired(check, backend, "probe-fp")


_CHECKS: tuple[Callable[[BackendOpener], Awaitable[None]], ...] = (
    _check_live_lease,
    _check_takeover,
    _check_not_recoverable,
    _check_concurrent_claims,
)


async def check_leases(new_store: LeaseStoreFactory) -> None:
    """Run the lease checks against backends opened on stores made by ``new_store``.

    Checks: a live owner's run is neither claimed by ``claim_expired`` nor by
    ``claim_run`` of another owner, stays writable by its owner, and another
    owner's writes of it (run rows and positions) raise
    :class:`~flujo_actors.errors.LeaseLostError`; once the owner's lease
    expired another owner claims it (only runs of the asked fingerprint),
    after which the old owner's renewals and writes (run rows, statuses and
    positions, new or replaced) raise ``LeaseLostError`` and change nothing; paused,
    finished and released runs are never claimed by ``claim_expired`` (an
    explicit ``claim_run`` takes a released one); three concurrent
    ``claim_expired`` calls split ten expired runs, each exactly once.

    Raises:
        AssertionError: A check failed (the message names it).
    """
    for run_check in _CHECKS:
        made = new_store()
        open_: Any = await made if inspect.isawaitable(made) else made
        first = open_(_LIVE)
        _expect(
            "protocol",
            isinstance(first, LeasingStateBackend),
            f"the store's backend {first!r} lacks the LeasingStateBackend methods",
        )
        await first.aclose()
        await run_check(open_)
