"""Run leases: the protocol of state backends shared by many runner processes.

A *leasing* state backend (:class:`~flujo_actors.backends.postgres.PostgresBackend`)
records which backend object (normally: which runner process) runs each
running run, until when. The runner takes a run's lease when it creates or
resumes the run, renews it every ``lease_s / 3`` while the run runs, and
gives it up when the run stops without finishing; a run whose owner stopped
renewing (a crashed process) is taken over by ``await runner.recover_async()``
in another process.

The single-process backends (:class:`~flujo_actors.backends.state.InMemoryStateBackend`,
:class:`~flujo_actors.backends.sqlite.SQLiteBackend`) do not lease: a SQLite
file is not shared by processes on many machines, and a process that shares
one with itself needs no recovery from another (it resumes its own runs with
``resume_async``). ``recover_async`` on them raises a clear error.

Delivery is at least once: a step that was running when its process died
runs again in the process that recovers the run; completed steps do not.
"""

from __future__ import annotations

from typing import Protocol, TypeGuard, runtime_checkable

from .state import StateBackend

__all__ = ["LeasingStateBackend", "is_leasing"]


@runtime_checkable
class LeasingStateBackend(StateBackend, Protocol):
    """A :class:`~flujo_actors.backends.state.StateBackend` with run leases.

    Contract (checked by :func:`flujo_actors.testing.backends.check_leases`):

    * :meth:`create_run` of a ``running`` run leases it to this backend.
    * :meth:`claim_run` leases a stored run to this backend unless another
      owner's lease is live (:class:`~flujo_actors.errors.RunLeasedError`).
    * :meth:`claim_expired` leases every *recoverable* run of one pipeline
      (running, owned, its owner's lease expired) and returns their ids;
      concurrent claims by several backends never return one run twice.
    * :meth:`renew_lease` extends a lease this backend holds, or raises
      :class:`~flujo_actors.errors.LeaseLostError` when another backend took
      the run over. Every write of a run taken over (``save_state``,
      ``save_states``, ``save_positions``: steps, status, context, completed
      positions and the paused run's pending inputs) raises it too and
      changes nothing: the check and the write are one transaction. So does
      a write of a run another owner leases that this backend never claimed.
    * A checkpoint that ends the run (any status but ``running``) gives the
      lease up; :meth:`release_run` gives it up without one. A run without an
      owner is never claimed by :meth:`claim_expired`.
    """

    @property
    def owner_id(self) -> str:
        """This backend's name in the leases."""
        ...

    @property
    def lease_s(self) -> float:
        """How long a lease lasts without renewal, in seconds."""
        ...

    async def claim_run(self, run_id: str) -> None:
        """Lease a stored run to this backend before resuming it."""
        ...

    async def claim_expired(self, fingerprint: str) -> list[str]:
        """Lease the recoverable runs of the pipeline ``fingerprint``; their ids, oldest first."""
        ...

    async def renew_lease(self, run_id: str) -> None:
        """Extend this backend's lease of ``run_id`` (LeaseLostError if it was taken over)."""
        ...

    async def release_run(self, run_id: str) -> None:
        """Give up this backend's lease of ``run_id`` (no-op when not held)."""
        ...


_LEASING: dict[type, bool] = {}


def is_leasing(backend: object) -> TypeGuard[LeasingStateBackend]:
    """Whether ``backend`` implements :class:`LeasingStateBackend` (decided once per type)."""
    kind = type(backend)
    found = _LEASING.get(kind)
    if found is None:
        found = _LEASING[kind] = isinstance(backend, LeasingStateBackend)
    return found
