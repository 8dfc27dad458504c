"""A registry of running actors: what introspection walks instead of scraping tasks.

The actor loop (:func:`~flujo_actors.actors.run_actor`) enters a cell in its
``registry`` when the actor starts and removes it when the loop ends, so the
registry always holds exactly the actors running now. A run has one (the
governor, the persistence actor, every step actor at every depth: see
:class:`flujo_actors.run.core.RunState`); a :class:`~flujo_actors.Supervisor`
runs its children on the same loop, and they go to the kernel's registry
(:data:`KERNEL`), which :func:`flujo_actors.introspection.actor_tree` walks in the kernel's registry (:data:`KERNEL`).

Adding and removing are O(1) dict operations (a dict keeps insertion order,
so a walk sees actors in the order they started). Not thread-safe: use it
from the trio thread, like every actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .actor import ActorCell

__all__ = ["KERNEL", "Registry"]


class Registry:
    """The running actors of one scope (a run, or an application), in start order."""

    __slots__ = ("_cells",)

    def __init__(self) -> None:
        self._cells: dict[int, ActorCell] = {}

    def add(self, cell: ActorCell) -> None:
        """Enter ``cell`` (idempotent: a restarted actor keeps its place)."""
        self._cells[id(cell)] = cell

    def discard(self, cell: ActorCell) -> None:
        """Remove ``cell`` if present."""
        self._cells.pop(id(cell), None)

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self) -> Iterator[ActorCell]:
        """The cells, in the order they were entered (a copy: safe while actors start)."""
        return iter(tuple(self._cells.values()))

    def __contains__(self, cell: object) -> bool:
        return self._cells.get(id(cell)) is cell


#: The kernel's registry: every actor running without a registry of its own
#: (user actors, supervised children) in this process, for
#: :func:`flujo_actors.introspection.actor_tree`.
KERNEL: Final = Registry()
