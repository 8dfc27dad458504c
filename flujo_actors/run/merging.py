"""Folding fan-out branches' contexts back into the main one, with the step's failure wording.

Parallel and router steps add their successful branches once all have
finished; a map step adds its items in item order as they complete (and then
drops their context copies). Either way the main context is untouched until
:meth:`ContextMerge.finish` (a user merge callable, which merges as it is
called, is undone if the merge or the step fails).
"""

from __future__ import annotations

from typing import Any

from ..context import restore_context, snapshot_context
from ..policy.merge import (
    IDENTITY_RULE,
    Fork,
    MergeConflict,
    MergeFold,
    identity_change,
    identity_of,
)
from ..steps.strategies import MergeStrategy

__all__ = ["ContextMerge"]


class ContextMerge:
    """Merges successful branches into ``ctx`` under ``merge`` (a MergeStrategy or a callable).

    :meth:`add` each successful branch in declaration (item) order, then
    :meth:`finish` (or :meth:`abandon` when the step failed for another
    reason). ``failure`` is set once a merge failed; later adds are ignored.
    """

    __slots__ = ("_fold", "_identity", "_label", "_snap", "failure", "owner")

    def __init__(self, ctx: Any, fork: Fork, merge: Any, owner: str) -> None:
        self.owner = owner
        self.failure: str | None = None
        self._snap: dict[str, Any] | None = None
        self._identity: tuple[Any, ...] = ()
        self._label = ""
        if isinstance(merge, MergeStrategy):
            self._fold = MergeFold(ctx, fork, merge.value)
        else:
            # A user callable merges as it is called: it must not leave the context half merged.
            self._snap = snapshot_context(ctx)
            self._identity = identity_of(ctx)
            self._label = getattr(merge, "__qualname__", None) or type(merge).__qualname__
            self._fold = MergeFold(ctx, fork, merge)

    def add(self, name: str, branch_ctx: Any) -> None:
        """Fold one successful branch; a failure is kept in ``failure`` (never raised)."""
        if self.failure is not None:
            return
        if self._snap is None:
            try:
                self._fold.add(name, branch_ctx)
            except MergeConflict as exc:
                self.failure = f"Step {self.owner!r}: {exc}"
            return
        try:
            self._fold.add(name, branch_ctx)
        except Exception as exc:
            self._undo()
            self.failure = (
                f"Step {self.owner!r}: merge_strategy {self._label} raised "
                f"{type(exc).__name__}: {exc}; the context was left as it was before the "
                "branches ran."
            )

    def finish(self) -> str | None:
        """Apply the merge; the failure feedback, or None."""
        if self.failure is not None:
            return self.failure
        if self._snap is None:
            self._fold.apply()
            return None
        changed = identity_change(self._fold.main, self._identity)
        if changed is not None:
            self._undo()
            self.failure = (
                f"Step {self.owner!r}: merge_strategy {self._label} changed {changed}: "
                f"{IDENTITY_RULE} The context was left as it was before the branches ran."
            )
        return self.failure

    def abandon(self) -> None:
        """The step failed: nothing it merged so far stays."""
        self._undo()

    def _undo(self) -> None:
        if self._snap is not None:
            restore_context(self._fold.main, self._snap)
