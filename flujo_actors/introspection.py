"""Live introspection: a point-in-time view of running actors, read from registries.

Every actor runs on the kernel's one loop (:func:`~flujo_actors.actors.run_actor`),
which enters its cell in a :class:`~flujo_actors.actors.registry.Registry`
while it runs: a run's registry (``RunState.registry``) for the runtime's
actors, the kernel's registry (:data:`~flujo_actors.actors.registry.KERNEL`)
for user actors and supervised children. Introspection walks those; it
never inspects tasks' coroutine frames.

* :meth:`Flujo.snapshot <flujo_actors.Flujo.snapshot>` uses :func:`run_tree`
  on each live run's registry: the governor, the persistence actor (with a
  state backend), and every step actor at every depth arranged by pipeline
  path (a loop's body actors under the loop step, a branch's actors under
  the parallel step), each with its mailbox depth and messages handled; a
  step actor's ``current`` is the :class:`~flujo_actors.frames.ExecutionFrame`
  it is handling.
* :func:`actor_tree` shows the user actors running beneath a nursery or task,
  nested the way they run.

A snapshot costs time proportional to the number of running actors.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from .actors.actor import ActorStatistics
from .actors.registry import KERNEL

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import trio

    from .actors.actor import ActorCell
    from .actors.registry import Registry

__all__ = ["ActorSnapshot", "MapItems", "RuntimeSnapshot", "actor_tree"]


@attrs.frozen(kw_only=True)
class MapItems:
    """A live map step's items at the time of the snapshot.

    Attributes:
        done: items whose body completed (successfully or not).
        failed: of those, the ones that failed.
        in_flight: items whose body is running.
        pending: items not drawn yet, when the items are a sized collection
            (a list); None for an iterator or async iterator (drawn lazily:
            how many remain is not known).
    """

    done: int
    failed: int
    in_flight: int
    pending: int | None


@attrs.frozen(kw_only=True)
class ActorSnapshot:
    """One actor at the time of the snapshot.

    Attributes:
        name: the actor's name (the step's name for step actors).
        kind: ``"governor"``, ``"persistence"``, ``"step"`` or ``"actor"``.
        path: for step actors, the step's path in the pipeline tree; ``()`` otherwise.
        statistics: state, mailbox depth/capacity, handled, restarts, last error.
        children: actors running beneath it.
        current: the message it is handling (a step actor's ExecutionFrame), or None.
        items: for the actor of a running map step, its items; else None.
    """

    name: str
    kind: str
    path: tuple[str, ...]
    statistics: ActorStatistics
    children: tuple[ActorSnapshot, ...] = ()
    current: Any = attrs.field(default=None, eq=False, repr=False)
    items: MapItems | None = None

    def walk(self) -> Iterator[ActorSnapshot]:
        """This actor and every actor beneath it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


@attrs.frozen(kw_only=True)
class RuntimeSnapshot:
    """A running run at one instant (see :meth:`Flujo.snapshot <flujo_actors.Flujo.snapshot>`).

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        time: ``trio.current_time()`` when the snapshot was taken.
        elapsed_s: time since the run started, on trio's clock.
        total_cost_usd: cost reported to the governor so far (applied or queued).
        total_tokens: tokens reported to the governor so far (applied or queued).
        dead_letters: messages of the run that went to dead letters so far.
        actors: the governor and the top-level step actors, each with its subtree.
    """

    run_id: str
    pipeline: str
    time: float
    elapsed_s: float
    total_cost_usd: Decimal
    total_tokens: int
    dead_letters: int
    actors: tuple[ActorSnapshot, ...]

    def walk(self) -> Iterator[ActorSnapshot]:
        """Every actor of the run, depth first."""
        for actor in self.actors:
            yield from actor.walk()

    def format(self) -> str:
        """The snapshot as indented text, one line per actor."""
        lines = [
            f"run {self.run_id} ({self.pipeline}) t+{self.elapsed_s:.3f}s "
            f"cost=${self.total_cost_usd} tokens={self.total_tokens} "
            f"dead_letters={self.dead_letters}"
        ]

        def visit(node: ActorSnapshot, depth: int) -> None:
            s = node.statistics
            mailbox = f"{s.mailbox_depth}/{s.mailbox_capacity}" if s.mailbox_capacity else "-"
            error = f" last_error={s.last_error!r}" if s.last_error else ""
            it = node.items
            items = (
                f" items: done={it.done} failed={it.failed} in_flight={it.in_flight} "
                f"pending={'?' if it.pending is None else it.pending}"
                if it is not None
                else ""
            )
            lines.append(
                f"{'  ' * depth}{node.kind} {'/'.join(node.path) or node.name} "
                f"[{s.state}] mailbox={mailbox} handled={s.handled} "
                f"restarts={s.restarts}{error}{items}"
            )
            for child in node.children:
                visit(child, depth + 1)

        for actor in self.actors:
            visit(actor, 1)
        return "\n".join(lines)


class _Node:
    __slots__ = ("cell", "children", "stats")

    def __init__(self, cell: ActorCell) -> None:
        self.cell = cell
        self.stats = cell.statistics()
        self.children: list[_Node] = []

    def freeze(self) -> ActorSnapshot:
        cell = self.cell
        return ActorSnapshot(
            name=cell.name,
            kind=cell.kind,
            path=cell.path,
            statistics=self.stats,
            children=tuple(c.freeze() for c in self.children),
            current=cell.current,
            items=_map_items(cell.current),
        )


def _map_items(frame: Any) -> MapItems | None:
    """The items of the map step ``frame`` (a step actor's current frame) runs, if it is one."""
    run = getattr(frame, "run", None)
    live = getattr(run, "live_maps", None)
    progress = live.get(frame.path) if live else None
    if progress is None:
        return None
    total = progress.total
    return MapItems(
        done=progress.done,
        failed=progress.failed,
        in_flight=progress.in_flight,
        pending=None if total is None else total - progress.drawn,
    )


def run_tree(registry: Iterable[ActorCell]) -> tuple[ActorSnapshot, ...]:
    """Snapshot the actors of one run's registry: runtime actors first, steps by path.

    A step actor sits under the nearest running step actor whose path is a
    prefix of its own (a branch's actors under the parallel step, a loop's
    body under the loop); others are roots, in the order they started.
    Must be called from the trio thread; it does not block.
    """
    roots: list[_Node] = []
    steps: list[_Node] = []
    for cell in registry:
        (steps if cell.kind == "step" else roots).append(_Node(cell))
    by_path: dict[tuple[str, ...], _Node] = {}
    for node in sorted(steps, key=lambda n: len(n.cell.path)):
        path = node.cell.path
        parent = None
        for cut in range(len(path) - 1, 0, -1):
            parent = by_path.get(path[:cut])
            if parent is not None:
                break
        (parent.children if parent is not None else roots).append(node)
        by_path.setdefault(path, node)
    return tuple(n.freeze() for n in roots)


def _beneath(task: trio.lowlevel.Task | None, root: trio.Nursery | trio.lowlevel.Task) -> bool:
    while task is not None:
        nursery = task.parent_nursery
        if nursery is None:
            return False
        if nursery is root:
            return True
        task = nursery.parent_task
        if task is root:
            return True
    return False


def actor_tree(
    root: trio.Nursery | trio.lowlevel.Task, registry: Registry = KERNEL
) -> tuple[ActorSnapshot, ...]:
    """Snapshot every actor of ``registry`` (the kernel's) running beneath ``root``.

    Actors are nested the way they run: an actor's children are the actors
    whose tasks run beneath its own task (a supervisor's children sit under
    the actor that runs the supervisor, when there is one); the others are
    roots, in the order they started.

    Must be called from the trio thread; it does not block and is not a
    checkpoint, so the view is consistent.
    """
    nodes: dict[trio.lowlevel.Task, _Node] = {}
    order: list[tuple[_Node, trio.lowlevel.Task | None]] = []
    for cell in registry:
        task = cell.task
        if task is root or _beneath(task, root):
            node = _Node(cell)
            order.append((node, task))
            if task is not None:
                nodes[task] = node
    roots: list[_Node] = []
    for node, task in order:
        parent = None
        up = task
        while parent is None and up is not None and up is not root:
            nursery = up.parent_nursery
            if nursery is None or nursery is root:
                break
            up = nursery.parent_task
            parent = nodes.get(up)
        (parent.children if parent is not None else roots).append(node)
    return tuple(n.freeze() for n in roots)
