"""Step caching: what a ``cache=True`` step stores on a miss and replays on a hit.

A hit must have every effect its miss had, except running the agent and
costing anything: the same output (rebuilt, of the same type), the same
changes to the context (fields an ``updates_context`` output or the agent
wrote, scratchpad keys, ``executed_branches`` appends) and the same facts in
``metadata`` (``fallback_triggered`` / ``original_error`` when the miss
succeeded through its fallback). So an entry holds the output, the context
changes the step made (found like a parallel branch's, against a copy taken
before it ran) and those metadata keys, all as ``dump_typed`` JSON.

What the serializer cannot handle never costs the step its result: the
cache is skipped with a :class:`~flujo_actors.errors.CacheSkippedWarning`
(an input without a key runs uncached, an output or context change that
cannot be stored is not stored, an entry that cannot be rebuilt is a miss).

The codec (:mod:`flujo_actors.serialization`) sits below this module, with the
value types; it is imported inside the functions only to keep ``cattrs`` off
``import flujo_actors``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Final

from .context import context_field_names, copy_context
from .errors import CacheSkippedWarning, SerializationError
from .policy.merge import BranchChanges, Fork, apply_changes, diff_branch
from .results import StepResult

if TYPE_CHECKING:
    from .steps.agent import AgentStep

__all__ = [
    "CacheMiss",
    "changes_since",
    "dump_changes",
    "fork_before",
    "load_changes",
    "lookup",
    "store",
]

#: Metadata of a miss that a hit reports too.
_REPLAYED: Final = ("fallback_triggered", "original_error", "original_error_type")
_FORMAT: Final = 1
_NO_CHANGES: Final = BranchChanges({}, {}, ())


class CacheMiss:
    """A miss in progress: the key to store under and the context before the step."""

    __slots__ = ("fork", "key")

    def __init__(self, key: str, ctx: Any) -> None:
        self.key = key
        self.fork = fork_before(ctx)


def fork_before(ctx: Any) -> Fork | None:
    """What :func:`changes_since` compares against: ``ctx`` before a step runs (or None)."""
    # A copy: the step mutates the live context in place, and the diff needs
    # the values from before it ran.
    return Fork.of(copy_context(ctx)) if ctx is not None else None


def _skip(message: str) -> None:
    warnings.warn(CacheSkippedWarning(message), stacklevel=3)


async def lookup(
    backend: Any, step: AgentStep, identity: str, data: Any, ctx: Any
) -> StepResult | CacheMiss | None:
    """A hit (its context changes already applied to ``ctx``), a :class:`CacheMiss`, or None.

    None: the input cannot be serialized into a key, so the step runs
    uncached (warned). An entry that cannot be rebuilt, or that writes
    fields ``ctx`` does not have, is a miss (warned).

    Cancellation: a cancelled lookup changes nothing.
    """
    from .policy.cache_key import cache_key

    try:
        key = cache_key(identity, data)
    except SerializationError as exc:
        _skip(f"Step {step.name!r} (cache=True) ran uncached: its input has no cache key. {exc}")
        return None
    found, entry = await backend.get(key)
    if not found:
        return CacheMiss(key, ctx)
    try:
        output, changes, metadata = _load(entry)
    except (SerializationError, KeyError, TypeError, ValueError) as exc:
        _skip(
            f"Step {step.name!r} (cache=True): its cache entry cannot be rebuilt, so the step "
            f"ran again. {exc}"
        )
        return CacheMiss(key, ctx)
    if ctx is not None and changes is not _NO_CHANGES:
        names = set(context_field_names(type(ctx)))
        missing = sorted({*changes.fields, *changes.appended} - names)
        if (changes.scratch_set or changes.scratch_deleted) and "scratchpad" not in names:
            missing.append("scratchpad")
        if missing:
            _skip(
                f"Step {step.name!r} (cache=True): its cache entry writes context field(s) "
                f"{missing!r}, which {type(ctx).__name__} lacks, so the step ran again."
            )
            return CacheMiss(key, ctx)
        apply_changes(ctx, changes)
    result = StepResult(step.name, output, True, 0)
    result.metadata["cache_hit"] = True
    result.metadata.update(metadata)
    return result


async def store(
    backend: Any, step: AgentStep, miss: CacheMiss, result: StepResult, ctx: Any
) -> None:
    """Store a successful miss: its output, its context changes, its replayed metadata.

    What cannot be serialized is not stored (warned); the result stands.
    """
    from .serialization import dump_typed

    changes = changes_since(miss.fork, ctx)
    replayed = {k: result.metadata[k] for k in _REPLAYED if k in result.metadata}
    try:
        # Only what a hit must replay is stored: most entries are just the output.
        entry: dict[str, Any] = {
            "format": _FORMAT,
            "output": dump_typed(result.output, path="output"),
        }
        if changes is not None:
            entry["context"] = dump_changes(changes)
        if replayed:
            entry["metadata"] = dump_typed(replayed, path="metadata")
        await backend.put(miss.key, entry)
    except SerializationError as exc:
        _skip(f"Step {step.name!r} (cache=True): its result stands but was not cached. {exc}")


def changes_since(fork: Fork | None, ctx: Any) -> BranchChanges | None:
    """What a step changed in ``ctx`` since ``fork`` was taken, or None for nothing.

    Also used by the checkpoints of completed positions (:mod:`.run.checkpoint`),
    which replay a step's context effect the way a cache hit does.
    """
    if fork is None or ctx is None:
        return None
    changes = diff_branch(fork, ctx)
    if not (changes.fields or changes.scratch_set or changes.scratch_deleted or changes.appended):
        return None
    return changes


def dump_changes(changes: BranchChanges) -> Any:
    """``changes`` as JSON data (``dump_typed`` values); :func:`load_changes` rebuilds them."""
    from .serialization import dump_typed

    return {
        "fields": dump_typed(changes.fields, path="context"),
        "scratch_set": dump_typed(changes.scratch_set, path="context.scratchpad"),
        "scratch_deleted": dump_typed(list(changes.scratch_deleted), path="context.scratchpad"),
        "appended": dump_typed(changes.appended, path="context"),
    }


def _load(entry: Any) -> tuple[Any, BranchChanges, dict[str, Any]]:
    from .serialization import load_typed

    if type(entry) is not dict or entry.get("format") != _FORMAT:
        raise ValueError(f"not a cache entry of this version: {entry!r:.80}")
    output = load_typed(entry["output"], path="output")
    ctx = entry.get("context")
    metadata = entry.get("metadata")
    changes = _NO_CHANGES if ctx is None else load_changes(ctx)
    if metadata is None:
        return output, changes, {}
    return output, changes, _mapping(load_typed(metadata, path="metadata"))


def load_changes(data: Any) -> BranchChanges:
    """Rebuild what :func:`dump_changes` wrote.

    Raises:
        SerializationError, KeyError, TypeError: ``data`` is not such a record.
    """
    from .serialization import load_typed

    return BranchChanges(
        _mapping(load_typed(data["fields"], path="context")),
        _mapping(load_typed(data["scratch_set"], path="context.scratchpad")),
        tuple(_sequence(load_typed(data["scratch_deleted"], path="context.scratchpad"))),
        {k: list(_sequence(v)) for k, v in _mapping(load_typed(data["appended"])).items()},
    )


def _mapping(value: Any) -> dict[Any, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected a mapping in the cache entry, got {value!r:.80}")
    return value


def _sequence(value: Any) -> list[Any]:
    if type(value) is not list:
        raise TypeError(f"expected a list in the cache entry, got {value!r:.80}")
    return value
