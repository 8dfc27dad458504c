"""Live introspection: a point-in-time view of the actors of a running trio program.

:func:`actor_tree` walks trio's task tree beneath a nursery (or task) and
reports every actor it finds: its name, state, mailbox depth and capacity,
messages handled, restarts and last error (from
:meth:`~flujo_actors.actors.ActorCell.statistics`). :meth:`Flujo.snapshot
<flujo_actors.Flujo.snapshot>` uses it for a run: the governor, and the
step actors arranged by pipeline path (a loop's body actors under the loop
step, a branch's actors under the parallel step).

Nothing is registered anywhere while the program runs (the hot path pays
nothing); the walk reads the arguments of each task's coroutine frame, so a
snapshot costs time proportional to the number of live tasks. Step actors
of single-use chains have no mailbox: they show ``mailbox_capacity == 0``.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .actors.actor import Actor, ActorCell, ActorStatistics

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ActorSnapshot", "RuntimeSnapshot", "actor_tree"]


@attrs.frozen(kw_only=True)
class ActorSnapshot:
    """One actor at the time of the snapshot.

    Attributes:
        name: the actor's name (the step's name for step actors).
        kind: ``"governor"``, ``"step"`` or ``"actor"``.
        path: for step actors, the step's path in the pipeline tree; ``()`` otherwise.
        statistics: state, mailbox depth/capacity, handled, restarts, last error.
        children: actors running beneath it.
    """

    name: str
    kind: str
    path: tuple[str, ...]
    statistics: ActorStatistics
    children: tuple[ActorSnapshot, ...] = ()

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
            lines.append(
                f"{'  ' * depth}{node.kind} {'/'.join(node.path) or node.name} "
                f"[{s.state}] mailbox={mailbox} handled={s.handled} "
                f"restarts={s.restarts}{error}"
            )
            for child in node.children:
                visit(child, depth + 1)

        for actor in self.actors:
            visit(actor, 1)
        return "\n".join(lines)


class _Node:
    __slots__ = ("children", "kind", "name", "path", "stats")

    def __init__(self, name: str, kind: str, path: tuple[str, ...], stats: ActorStatistics) -> None:
        self.name = name
        self.kind = kind
        self.path = path
        self.stats = stats
        self.children: list[_Node] = []

    def freeze(self) -> ActorSnapshot:
        return ActorSnapshot(
            name=self.name,
            kind=self.kind,
            path=self.path,
            statistics=self.stats,
            children=tuple(c.freeze() for c in self.children),
        )


def _frame_locals(task: trio.lowlevel.Task) -> dict[str, Any]:
    frame = getattr(task.coro, "cr_frame", None)
    if frame is None:
        return {}
    try:
        return dict(frame.f_locals)
    except Exception:  # a frame that cannot be read is not an actor's
        return {}


def _actor_node(task: trio.lowlevel.Task) -> _Node | None:
    """The actor a task runs, if it runs one (the kernel's and the engine's actor tasks)."""
    from .governor import Governor
    from .run.core import StepActor

    local_vars = _frame_locals(task)
    cell: ActorCell | None = None
    actor: Actor | None = None
    for value in local_vars.values():
        if cell is None and isinstance(value, ActorCell):
            cell = value
        elif actor is None and isinstance(value, Actor):
            actor = value
    if cell is None and actor is None:
        return None
    if isinstance(actor, StepActor):
        first = local_vars.get("first")
        job = getattr(first, "job", None)
        path = (*getattr(job, "path", ()), actor.name)
        stats = (
            cell.statistics()
            if cell is not None
            else ActorStatistics(
                name=actor.name,
                state="running",
                mailbox_depth=0,
                mailbox_capacity=0,
                handled=0,
                restarts=0,
                last_error=None,
            )
        )
        return _Node(actor.name, "step", path, stats)
    if cell is not None:
        kind = "governor" if isinstance(cell.instance, Governor) else "actor"
        return _Node(cell.name, kind, (), cell.statistics())
    own = getattr(actor, "statistics", None)
    if callable(own):
        stats = own()
        if isinstance(stats, ActorStatistics):
            kind = "governor" if isinstance(actor, Governor) else "actor"
            return _Node(stats.name, kind, (), stats)
    if isinstance(actor, Governor):
        # The governor has its own unbounded mailbox (a deque), not an ActorCell.
        inbox: Any = getattr(actor, "_inbox", ())
        return _Node(
            actor.name,
            "governor",
            (),
            ActorStatistics(
                name=actor.name,
                state=str(getattr(actor, "state", "running")),
                mailbox_depth=len(inbox),
                mailbox_capacity=math.inf,
                handled=int(getattr(actor, "handled", 0)),
                restarts=0,
                last_error=None,
            ),
        )
    return None


def _collect(
    task: trio.lowlevel.Task, parent: _Node | None, roots: list[_Node], steps: list[_Node]
) -> None:
    node = _actor_node(task)
    below = parent
    if node is not None:
        if node.kind == "step":
            steps.append(node)
        elif parent is not None:
            parent.children.append(node)
        else:
            roots.append(node)
        below = node if node.kind != "step" else parent
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            _collect(child, below, roots, steps)


def actor_tree(root: trio.Nursery | trio.lowlevel.Task) -> tuple[ActorSnapshot, ...]:
    """Snapshot every actor running beneath ``root`` (a nursery or a task).

    Actors are nested the way they run: an actor's children are the actors
    started in nurseries its task owns (a supervisor's children sit under
    the cell of the supervisor's own actor, when it has one). Pipeline step
    actors are nested by pipeline path instead, which is how a user thinks
    of them: a loop's body actors (which run in the loop step's nursery)
    appear under the loop step.

    Must be called from the trio thread; it does not block and is not a
    checkpoint, so the view is consistent.
    """
    roots: list[_Node] = []
    steps: list[_Node] = []
    tasks = root.child_tasks if isinstance(root, trio.Nursery) else [root]
    for task in tasks:
        _collect(task, None, roots, steps)
    by_path: dict[tuple[str, ...], _Node] = {}
    for node in sorted(steps, key=lambda n: len(n.path)):
        parent = None
        for cut in range(len(node.path) - 1, 0, -1):
            parent = by_path.get(node.path[:cut])
            if parent is not None:
                break
        (parent.children if parent is not None else roots).append(node)
        by_path.setdefault(node.path, node)
    return tuple(n.freeze() for n in roots)
