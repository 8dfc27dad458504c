"""State backends: the protocol, its data model, and the in-memory backend.

The runner persists a :class:`RunCheckpoint` after every top-level step; a
backend appends the checkpoint's ``new_steps`` to the run's history and
updates the run row, so the work per step does not grow with the history.
:meth:`StateBackend.load_state` returns a :class:`RunSnapshot` with the full
history, which ``resume_async`` continues from.

Every value a backend stores is JSON data (the runner serializes with
:func:`~flujo_actors.serialization.safe_serialize` /
:func:`~flujo_actors.serialization.dump_typed` first); backends never pickle.
Use :func:`flujo_actors.testing.backends.check_state_backend` to check a backend
of your own against this contract.

(Over 500 lines: the protocol, its value types and the in-memory reference
backend are read together; the reference backend is the executable spec of
the protocol, so it stays beside it.)
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs
import trio

from ..serialization import dumps_json, loads_json

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..errors import RunExistsError


__all__ = [
    "RUN_STATUSES",
    "InMemoryStateBackend",
    "PositionRecord",
    "RunCheckpoint",
    "RunSnapshot",
    "StateBackend",
    "check_prune",
    "decode_run",
    "prune_matches",
]

RUN_STATUSES: Final = ("running", "completed", "failed", "paused", "cancelled")
"""The statuses a run can be saved with."""


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must not be empty.")


def _decimal_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    from decimal import Decimal, InvalidOperation

    try:
        Decimal(value)
    except InvalidOperation:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be a decimal string such as "
            f"'0.25', got {value!r}."
        ) from None


def _as_tuple(rows: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(rows)


def _status(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in RUN_STATUSES:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be one of {RUN_STATUSES!r}, "
            f"got {value!r}."
        )


def _count(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be an int >= 0, got {value!r}."
        )


@attrs.frozen(kw_only=True)
class RunCheckpoint:
    """What the runner saves after each top-level step.

    Attributes:
        run_id: The run.
        pipeline_name: The pipeline's name.
        status: ``"running"``, ``"completed"``, ``"failed"`` or ``"paused"``.
        next_step_index: Index of the first top-level step *not* yet completed.
        context: The serialized context (JSON data).
        initial_input: The serialized run input (JSON data).
        output: The last completed step's serialized output, i.e. the next
            step's input (JSON data).
        new_steps: Serialized step-result rows completed since the previous
            checkpoint of this run, in order (JSON data each).
        total_cost_usd: The run's exact total cost, as a ``Decimal`` string.
        total_tokens: The run's total tokens.
        updated_at: When the checkpoint was taken (seconds, caller's clock).
        pipeline_fingerprint: The structural fingerprint of the pipeline
            running the run (text, see :mod:`flujo_actors.policy.fingerprint`),
            or ``None`` to keep the stored one: the runner sends it when it
            creates the run (and when a resume with a changed pipeline was
            allowed), not with every step.
    """

    run_id: str = attrs.field(validator=[attrs.validators.instance_of(str), _non_empty])
    pipeline_name: str = attrs.field(validator=attrs.validators.instance_of(str))
    status: str = attrs.field(validator=_status)
    next_step_index: int = attrs.field(validator=_count)
    context: Any
    initial_input: Any
    output: Any = None
    new_steps: tuple[Any, ...] = attrs.field(default=(), converter=_as_tuple)
    total_cost_usd: str = attrs.field(
        default="0", validator=[attrs.validators.instance_of(str), _decimal_text]
    )
    total_tokens: int = attrs.field(default=0, validator=_count)
    updated_at: float = attrs.field(default=0.0, converter=float)
    pipeline_fingerprint: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )


@attrs.frozen(kw_only=True)
class RunSnapshot:
    """What :meth:`StateBackend.load_state` returns: the run with its full history.

    The fields mean what they mean on :class:`RunCheckpoint`; ``step_history``
    holds every step row saved for the run, oldest first. All values are new
    JSON data (mutating them never changes what the backend stores).
    ``pipeline_fingerprint`` is the last fingerprint saved for the run, or
    ``None`` for a run stored without one (by an older flujo_actors).
    """

    run_id: str
    pipeline_name: str
    status: str
    next_step_index: int
    context: Any
    initial_input: Any
    output: Any
    step_history: tuple[Any, ...]
    total_cost_usd: str
    total_tokens: int
    updated_at: float
    pipeline_fingerprint: str | None = None


@attrs.frozen(kw_only=True)
class PositionRecord:
    """A completed step position below the top level, saved as it completes.

    A *position* names one execution of a step inside a run: the step path
    plus the loop iteration, parallel branch or map item it belongs to
    (see :mod:`flujo_actors.run.checkpoint`). On resume a position that has a
    record is replayed from it instead of running again.

    Attributes:
        run_id: The run.
        position: The position's key (text, unique within the run).
        record: What the runner needs to replay it (JSON data).
    """

    run_id: str = attrs.field(validator=[attrs.validators.instance_of(str), _non_empty])
    position: str = attrs.field(validator=[attrs.validators.instance_of(str), _non_empty])
    record: Any


@runtime_checkable
class StateBackend(Protocol):
    """Where runs are persisted for ``resume_async``.

    Contract (checked by :func:`flujo_actors.testing.backends.check_state_backend`):

    * :meth:`create_run` creates a run from its first checkpoint, atomically:
      if the run id is already stored it raises
      :class:`~flujo_actors.errors.RunExistsError` and changes nothing, so of
      concurrent creates with one id exactly one succeeds.
    * :meth:`save_state` appends the checkpoint's ``new_steps`` to the run's
      history and replaces the run's other fields (the pipeline fingerprint
      only when the checkpoint carries one); it never rewrites the history. A
      run that does not exist yet is created.
    * :meth:`save_states` applies many checkpoints, in order, atomically.
    * :meth:`load_state` returns a :class:`RunSnapshot` with the full history,
      or ``None`` for an unknown run.
    * :meth:`delete_state` forgets a run and its history (unknown: no-op).
    * :meth:`list_runs` returns run ids (optionally those with one status);
      the order is the backend's choice.
    * :meth:`prune` deletes the runs matching its filters (see
      :func:`check_prune`: at least one filter; without ``status`` a
      ``"running"`` run is never pruned) and returns their ids.
    * :meth:`save_positions` stores completed positions (a record per
      ``(run_id, position)``; saving a position again replaces its record),
      all of a batch or none; :meth:`load_positions` returns a run's records
      by position (empty for an unknown run); :meth:`delete_state` and
      :meth:`prune` drop them with the run. The work per record does not grow with the run.
    * Stored data never aliases the caller's objects, in either direction.

    Every method is a trio checkpoint. A cancelled write either happened
    completely or not at all; implementations document which, and when.
    """

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        """Store a new run from its first checkpoint; RunExistsError if the id is taken."""
        ...

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        """Append ``checkpoint.new_steps`` to ``run_id`` and update its run row."""
        ...

    async def save_states(self, batch: Sequence[RunCheckpoint]) -> None:
        """Save many checkpoints, in order, as one atomic group commit."""
        ...

    async def load_state(self, run_id: str) -> RunSnapshot | None:
        """Return the run with its full history, or ``None`` if unknown."""
        ...

    async def delete_state(self, run_id: str) -> None:
        """Forget the run and its history (no-op when unknown)."""
        ...

    async def list_runs(self, status: str | None = None) -> list[str]:
        """Return the ids of the stored runs, or of those with ``status``."""
        ...

    async def prune(
        self, *, older_than_s: float | None = None, status: str | None = None
    ) -> list[str]:
        """Delete the runs not updated for ``older_than_s`` seconds and/or with ``status``."""

    async def save_positions(self, batch: Sequence[PositionRecord]) -> None:
        """Store completed positions (replacing a position saved before), atomically."""
        ...

    async def load_positions(self, run_id: str) -> dict[str, Any]:
        """Return ``{position: record}`` of the run's completed positions (empty if none)."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources (idempotent)."""
        ...


def _check_run_id(run_id: object, checkpoint: RunCheckpoint) -> None:
    """Reject a ``save_state`` call whose ``run_id`` contradicts its checkpoint."""
    if run_id != checkpoint.run_id:
        raise ValueError(
            f"save_state: run_id {run_id!r} does not match checkpoint.run_id "
            f"{checkpoint.run_id!r}. Pass the checkpoint's own run id."
        )


def run_exists_error(run_id: str, backend: object) -> RunExistsError:
    """The error every backend raises when :meth:`StateBackend.create_run` finds ``run_id``."""
    from ..errors import RunExistsError

    return RunExistsError(
        f"Run id {run_id!r} already names a run in the state backend {type(backend).__name__}; "
        "a run id names one run. Pass a new run_id (or none, for a generated one), continue "
        f"the stored run with `await runner.resume_async({run_id!r})`, or delete it first "
        f"with `await backend.delete_state({run_id!r})`.",
        run_id,
    )


def _check_status(status: str | None) -> None:
    """Reject a ``list_runs`` status filter that no run can have."""
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(
            f"list_runs: status must be None or one of {RUN_STATUSES!r}, got {status!r}."
        )


def check_prune(older_than_s: object, status: object) -> None:
    """Reject :meth:`StateBackend.prune` arguments that select nothing sensible.

    Retention rules every backend follows: at least one filter (``prune()``
    alone would delete every finished run: pass ``older_than_s=0`` to mean
    that); ``older_than_s`` is a finite number of seconds >= 0, compared with
    the run's ``updated_at`` (wall-clock ``time.time()``); ``status`` is a run
    status. Without ``status``, runs whose status is ``"running"`` are kept:
    they may be live in some process; prune stale ones with
    ``status="running"`` explicitly.

    Raises:
        ValueError: naming the argument, the value and the fix.
    """
    if older_than_s is None and status is None:
        raise ValueError(
            "prune: pass older_than_s=SECONDS and/or status=STATUS; prune() with no filter "
            "would delete every finished run (to mean that, pass older_than_s=0)."
        )
    if older_than_s is not None and (
        isinstance(older_than_s, bool)
        or not isinstance(older_than_s, int | float)
        or not math.isfinite(older_than_s)
        or older_than_s < 0
    ):
        raise ValueError(
            f"prune: older_than_s must be a number of seconds >= 0, got {older_than_s!r}."
        )
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"prune: status must be None or one of {RUN_STATUSES!r}, got {status!r}.")


def prune_matches(
    run_status: str, updated_at: float, older_than_s: float | None, status: str | None, now: float
) -> bool:
    """Whether a run with ``run_status``/``updated_at`` is pruned (rules: :func:`check_prune`)."""
    if status is None:
        if run_status == "running":
            return False
    elif run_status != status:
        return False
    return older_than_s is None or updated_at <= now - older_than_s


@attrs.frozen
class _EncodedCheckpoint:
    """A checkpoint with every JSON value already encoded as text (internal)."""

    run_id: str
    pipeline_name: str
    status: str
    next_step_index: int
    context: str
    initial_input: str
    output: str
    new_steps: tuple[str, ...]
    total_cost_usd: str
    total_tokens: int
    updated_at: float
    pipeline_fingerprint: str | None

    @classmethod
    def encode(cls, checkpoint: RunCheckpoint) -> _EncodedCheckpoint:
        """Encode ``checkpoint``'s JSON values (raises SerializationError with a path)."""
        where = f"checkpoint[{checkpoint.run_id!r}]"
        context = dumps_json(checkpoint.context, path=f"{where}.context")
        return cls(
            checkpoint.run_id,
            checkpoint.pipeline_name,
            checkpoint.status,
            checkpoint.next_step_index,
            context,
            dumps_json(checkpoint.initial_input, path=f"{where}.initial_input"),
            dumps_json(checkpoint.output, path=f"{where}.output"),
            tuple(
                _encode_row(row, checkpoint.context, context, f"{where}.new_steps[{index}]")
                for index, row in enumerate(checkpoint.new_steps)
            ),
            checkpoint.total_cost_usd,
            checkpoint.total_tokens,
            checkpoint.updated_at,
            checkpoint.pipeline_fingerprint,
        )


def _encode_row(row: Any, context: Any, context_text: str, path: str) -> str:
    """``dumps_json(row)``, reusing ``context_text`` when the row ends with the context itself.

    The runner's step rows end with the context the step left, the very
    object the checkpoint's ``context`` is: its text is written once, not
    encoded twice (same text either way).
    """
    if type(row) is dict and row and context is not None and type(context) is dict:
        key = next(reversed(row))
        if type(key) is str and row[key] is context:
            head = {k: v for k, v in row.items() if k is not key}
            tail = f"{dumps_json(key)}:{context_text}"
            if not head:
                return f"{{{tail}}}"
            return f"{dumps_json(head, path=path)[:-1]},{tail}}}"
    return dumps_json(row, path=path)


def decode_run(
    run_id: str, row: Sequence[Any], steps: Iterable[str], fingerprint: str | None
) -> RunSnapshot:
    """A run read back from a SQL store.

    Args:
        run_id: the run.
        row: its run columns, in the order both SQL backends select them:
            pipeline_name, status, next_step_index, context, initial_input,
            output (JSON text), total_cost_usd, total_tokens, updated_at.
        steps: its step rows' JSON text, oldest first.
        fingerprint: the pipeline fingerprint stored with the run.

    Raises:
        ValueError: stored JSON is damaged (the backend names itself and the run).
    """
    return RunSnapshot(
        run_id=run_id,
        pipeline_name=row[0],
        status=row[1],
        next_step_index=row[2],
        context=loads_json(row[3]),
        initial_input=loads_json(row[4]),
        output=loads_json(row[5]),
        step_history=tuple(loads_json(step) for step in steps),
        total_cost_usd=row[6],
        total_tokens=row[7],
        updated_at=row[8],
        pipeline_fingerprint=fingerprint,
    )


@attrs.define
class _StoredRun:
    row: _EncodedCheckpoint
    steps: list[str]
    fingerprint: str | None


def encode_positions(batch: Sequence[PositionRecord]) -> list[tuple[str, str, str]]:
    """``(run_id, position, record JSON text)`` of each record (raises SerializationError)."""
    from ..errors import SerializationError

    try:
        # One record per completed step of a fan-out: no error path formatted per record.
        return [(item.run_id, item.position, dumps_json(item.record)) for item in batch]
    except SerializationError:
        pass
    return [
        (
            item.run_id,
            item.position,
            dumps_json(item.record, path=f"position[{item.run_id!r}][{item.position!r}]"),
        )
        for item in batch
    ]


class InMemoryStateBackend(trio.abc.AsyncResource):
    """A :class:`StateBackend` in a dict, for tests and single-process use.

    Values are stored as JSON text (``json.dumps`` of what the runner gives),
    which is both the strictest JSON check and the cheapest deep copy: the
    caller's objects are never aliased, and each :meth:`load_state` returns
    new objects. Nothing survives the process. Safe to share between threads
    (one lock guards the dict).

    Cancellation: every method checkpoints *before* doing anything and then
    completes without yielding, so a cancelled call had no effect.
    """

    def __init__(self) -> None:
        """Create an empty backend."""
        self._runs: dict[str, _StoredRun] = {}
        # Positions may be saved before the run row (a branch finishing first).
        self._positions: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        """Store a new run from its first checkpoint (atomic under the backend's lock).

        Raises:
            RunExistsError: A run with ``checkpoint.run_id`` is stored (nothing changes).
            SerializationError: A value is not JSON data (nothing is saved).
        """
        await trio.lowlevel.checkpoint()
        encoded = _EncodedCheckpoint.encode(checkpoint)
        with self._lock:
            if encoded.run_id in self._runs:
                raise run_exists_error(encoded.run_id, self)
            self._apply(encoded)

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        """Append ``checkpoint.new_steps`` to the run's history and update the run.

        Raises:
            ValueError: ``run_id`` differs from ``checkpoint.run_id``.
            SerializationError: A value is not JSON data (nothing is saved).
        """
        await trio.lowlevel.checkpoint()
        _check_run_id(run_id, checkpoint)
        encoded = _EncodedCheckpoint.encode(checkpoint)
        with self._lock:
            self._apply(encoded)

    async def save_states(self, batch: Sequence[RunCheckpoint]) -> None:
        """Save ``batch`` in order, all or nothing.

        Raises:
            SerializationError: A value is not JSON data (nothing is saved).
        """
        await trio.lowlevel.checkpoint()
        encoded = [_EncodedCheckpoint.encode(checkpoint) for checkpoint in batch]
        with self._lock:
            for item in encoded:
                self._apply(item)

    def _apply(self, encoded: _EncodedCheckpoint) -> None:
        stored = self._runs.get(encoded.run_id)
        if stored is None:
            self._runs[encoded.run_id] = _StoredRun(
                encoded, list(encoded.new_steps), encoded.pipeline_fingerprint
            )
        else:
            stored.row = encoded
            stored.steps.extend(encoded.new_steps)
            if encoded.pipeline_fingerprint is not None:
                stored.fingerprint = encoded.pipeline_fingerprint

    async def load_state(self, run_id: str) -> RunSnapshot | None:
        """Return the run with its full history, or ``None`` if unknown."""
        await trio.lowlevel.checkpoint()
        with self._lock:
            stored = self._runs.get(run_id)
            if stored is None:
                return None
            row, steps, fingerprint = stored.row, tuple(stored.steps), stored.fingerprint
        return RunSnapshot(
            run_id=row.run_id,
            pipeline_name=row.pipeline_name,
            status=row.status,
            next_step_index=row.next_step_index,
            context=loads_json(row.context),
            initial_input=loads_json(row.initial_input),
            output=loads_json(row.output),
            step_history=tuple(loads_json(step) for step in steps),
            total_cost_usd=row.total_cost_usd,
            total_tokens=row.total_tokens,
            updated_at=row.updated_at,
            pipeline_fingerprint=fingerprint,
        )

    async def delete_state(self, run_id: str) -> None:
        """Forget the run and its history (no-op when unknown)."""
        await trio.lowlevel.checkpoint()
        with self._lock:
            self._runs.pop(run_id, None)
            self._positions.pop(run_id, None)

    async def save_positions(self, batch: Sequence[PositionRecord]) -> None:
        """Store completed positions, all or nothing.

        Raises:
            SerializationError: A record is not JSON data (nothing is saved).
        """
        await trio.lowlevel.checkpoint()
        encoded = encode_positions(batch)
        with self._lock:
            for run_id, position, text in encoded:
                self._positions.setdefault(run_id, {})[position] = text

    async def load_positions(self, run_id: str) -> dict[str, Any]:
        """Return ``{position: record}`` of the run (new objects; empty if none)."""
        await trio.lowlevel.checkpoint()
        with self._lock:
            stored = dict(self._positions.get(run_id, {}))
        return {position: loads_json(text) for position, text in stored.items()}

    async def list_runs(self, status: str | None = None) -> list[str]:
        """Return run ids in the order the runs were first saved.

        Raises:
            ValueError: ``status`` is not ``None`` or one of :data:`RUN_STATUSES`.
        """
        await trio.lowlevel.checkpoint()
        _check_status(status)
        with self._lock:
            return [
                run_id
                for run_id, stored in self._runs.items()
                if status is None or stored.row.status == status
            ]

    async def prune(
        self, *, older_than_s: float | None = None, status: str | None = None
    ) -> list[str]:
        """Delete the matching runs with their history; return their ids, oldest saved first.

        Raises:
            ValueError: bad filters (see :func:`check_prune`); nothing is deleted.
        """
        await trio.lowlevel.checkpoint()
        check_prune(older_than_s, status)
        now = time.time()
        with self._lock:
            gone = [
                run_id
                for run_id, stored in self._runs.items()
                if prune_matches(
                    stored.row.status, stored.row.updated_at, older_than_s, status, now
                )
            ]
            for run_id in gone:
                del self._runs[run_id]
                self._positions.pop(run_id, None)
        return gone

    async def aclose(self) -> None:
        """Nothing to release; the data stays readable (idempotent)."""
        await trio.lowlevel.checkpoint()
