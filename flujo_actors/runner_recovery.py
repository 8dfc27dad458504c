"""The runner's side of run leases: keep a run's lease while it runs, recover dead owners' runs.

Only a leasing state backend (:mod:`flujo_actors.backends.leasing`, e.g.
:class:`~flujo_actors.backends.postgres.PostgresBackend`) takes part; with
any other backend (or none) every function here is free: :func:`keep_lease`
returns a shared no-op context manager.

Cancellation: a cancelled run is stored with the status ``"cancelled"``,
which gives its lease up with it (the release below is then a no-op); it is
not recovered. If that write fails, the kept lease expires after ``lease_s``. A run that stops with an error (a usage breach, a hook or backend
error) gives its lease up (shielded): its caller saw the error, so it is not
recovered automatically; ``resume_async`` continues it.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from .errors import only_cancelled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .backends.leasing import LeasingStateBackend
    from .results import PipelineResult
    from .runner import Flujo

__all__ = ["claim_for_resume", "keep_lease", "recover", "release_created"]


# The context manager of a run whose backend does not lease: no work, no allocation.
_NO_LEASE: Final = contextlib.nullcontext()


def keep_lease(backend: Any, run_id: str) -> AbstractAsyncContextManager[None]:
    """An async context manager around a run: renews its lease while the body runs.

    The renewal runs every ``lease_s / 3`` beside the body; when it finds the
    lease taken over it raises :class:`~flujo_actors.errors.LeaseLostError`,
    which cancels the body (the run stops; the other process continues it).
    """
    if backend is None:
        return _NO_LEASE
    from .backends.leasing import is_leasing

    if not is_leasing(backend):
        return _NO_LEASE
    return _leased(backend, run_id)


@asynccontextmanager
async def _leased(backend: LeasingStateBackend, run_id: str) -> AsyncIterator[None]:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_renew, backend, run_id)
            yield
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        if not only_cancelled(exc):
            # The run stopped with an error: it is no longer anyone's (not
            # recovered; resumable). The run's own error is the one to report
            # (a lost server fails both): the lease then expires instead.
            with contextlib.suppress(Exception):
                await backend.release_run(run_id)
        # Cancelled: the run's "cancelled" checkpoint gave the lease up.
        raise
    # A no-op when the run's last checkpoint ended it (the backend gave the
    # lease up with it); else it ended without a final checkpoint.
    await backend.release_run(run_id)


async def _renew(backend: LeasingStateBackend, run_id: str) -> None:
    interval = backend.lease_s / 3
    while True:
        await trio.sleep(interval)
        await backend.renew_lease(run_id)


async def claim_for_resume(backend: Any, run_id: str) -> None:
    """Lease ``run_id`` before ``resume_async`` continues it (no-op for other backends).

    Raises:
        RunLeasedError: Another live process runs it.
    """
    from .backends.leasing import is_leasing

    if is_leasing(backend):
        await backend.claim_run(run_id)


async def release_created(backend: Any, run_id: str) -> None:
    """Give up the lease ``create_run`` took, for a run ``resume_async`` starts next (fork).

    ``resume_async`` claims the run itself; a leasing backend refuses to
    claim a run it holds already (it would be running twice in one process).
    No-op for other backends.
    """
    from .backends.leasing import is_leasing

    if is_leasing(backend):
        await backend.release_run(run_id)


async def recover(runner: Flujo) -> list[PipelineResult]:
    """Claim and resume every run of ``runner``'s pipeline whose owner's lease expired.

    The claimed runs resume concurrently; the results come in the order the
    runs were first saved. A run another recoverer claimed first is not
    returned here (``FOR UPDATE SKIP LOCKED``): two processes never resume
    one run. Paused runs wait for their input and are never recovered.

    Raises:
        PipelineDefinitionError: The runner has no leasing state backend.
        Exception: What a resumed run raised (``UsageLimitExceededError``, a
            backend error), after every claimed run has ended.
    """
    from .backends.leasing import is_leasing
    from .errors import PipelineDefinitionError

    backend = runner.state_backend
    if backend is None or not is_leasing(backend):
        what = "no state backend" if backend is None else f"{type(backend).__name__}"
        raise PipelineDefinitionError(
            f"Flujo.recover_async needs a state backend with run leases, shared by the runner "
            f"processes, but this runner has {what}, which does not lease runs (a run's owner "
            "cannot be told apart from a dead one). Use a shared backend such as "
            "Flujo(..., state_backend=PostgresBackend(dsn)); with SQLite or in-memory state, "
            "continue a stopped run with `await runner.resume_async(run_id)`."
        )
    run_ids = await backend.claim_expired(runner._pipeline_fingerprint())
    results: list[PipelineResult | None] = [None] * len(run_ids)
    errors: list[Exception] = []

    async def resume(index: int, run_id: str) -> None:
        # One run's error must not cancel the others (their leases would be
        # given up): each ends on its own, the errors are raised afterwards.
        try:
            results[index] = await runner.resume_async(run_id)
        except Exception as exc:
            errors.append(exc)
            await backend.release_run(run_id)

    async with trio.open_nursery() as nursery:
        for index, run_id in enumerate(run_ids):
            nursery.start_soon(resume, index, run_id)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup("recover_async: several recovered runs raised", errors)
    return [result for result in results if result is not None]
