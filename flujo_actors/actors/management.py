"""Child management for every supervisor: which/count/restart/delete children, lookup, tree.

OTP's ``supervisor`` module functions, on trio: the queries are synchronous
snapshots; the commands (``restart_child``, ``delete_child``) run inside the
supervisor's own loop, one request at a time, like ``start_child`` and
``stop_child``, so they never interleave with a restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .actor import ReplySlot
from .strategy import Restart

if TYPE_CHECKING:
    from .actor import ActorRef
    from .strategy import Strategy
    from .supervisor import Supervisor, _Child

__all__ = ["ChildCounts", "ChildInfo", "SupervisorManagement"]


@attrs.frozen
class _Call:
    """A command run inside the supervisor's loop; its return value answers ``slot``."""

    fn: Callable[[], Awaitable[object]]
    slot: ReplySlot
    what: str


@attrs.frozen(kw_only=True)
class ChildInfo:
    """One child, as :meth:`SupervisorManagement.which_children` sees it.

    Attributes:
        name: the child's name.
        kind: ``"actor"`` or ``"supervisor"`` (a nested tree).
        state: ``"new"``, ``"starting"``, ``"running"``, ``"restarting"``,
            ``"crashed"``, ``"stopping"`` or ``"stopped"`` (for good).
        restarts: how often its supervisor restarted it.
        mailbox_depth: messages waiting in its mailbox (0 for a supervisor).
        restart: its restart type.
    """

    name: str
    kind: str
    state: str
    restarts: int
    mailbox_depth: int
    restart: Restart


@attrs.frozen(kw_only=True)
class ChildCounts:
    """OTP's ``count_children``: specs known, children alive, and how many of each kind."""

    specs: int
    active: int
    supervisors: int
    workers: int


def _info(child: _Child) -> ChildInfo:
    cell = child.cell
    return ChildInfo(
        name=child.spec.name,
        kind="supervisor" if child.nested is not None else "actor",
        state="stopped" if child.stopped else cell.state,
        restarts=cell.restarts,
        mailbox_depth=cell.send.statistics().current_buffer_used,
        restart=child.spec.restart,
    )


class SupervisorManagement:
    """The child-management half of :class:`~flujo_actors.actors.Supervisor`."""

    if TYPE_CHECKING:
        name: str
        strategy: Strategy
        _state: str
        _restarts: int
        _children: dict[str, _Child]
        _order: list[_Child]
        _pending: list[Any]

        def _request(self, request: Any, what: str) -> ReplySlot: ...
        def _child(self, name: str) -> _Child: ...
        async def _spawn(self, child: _Child) -> None: ...
        def _finalize(self, child: _Child, reason: str, error: str | None = None) -> None: ...
        def _child_crashed(self, child: _Child, error: str, now: float | None = None) -> None: ...
        def ref(self, name: str) -> ActorRef: ...
        def supervisor(self, name: str) -> Supervisor: ...

    # -- queries ------------------------------------------------------------

    def _listed(self) -> list[_Child]:
        """The children ``which_children`` shows (a dynamic supervisor hides stopped ones)."""
        return list(self._order)

    def which_children(self) -> tuple[ChildInfo, ...]:
        """Every child in start order: name, kind, state, restarts, mailbox depth."""
        return tuple(_info(child) for child in self._listed())

    def count_children(self) -> ChildCounts:
        """How many children: known specs, alive (not stopped for good), supervisors, workers."""
        listed = self._listed()
        nested = sum(1 for child in listed if child.nested is not None)
        return ChildCounts(
            specs=len(listed),
            active=sum(1 for child in listed if not child.stopped and child.generation > 0),
            supervisors=nested,
            workers=len(listed) - nested,
        )

    def lookup(self, path: str) -> ActorRef:
        """The ref of the actor at ``path`` (``"worker"``, ``"pool/worker-3"``) in this tree.

        Each segment but the last names a nested supervisor; the walk follows
        the current incarnation of each, so a ref looked up after a subtree
        restarted reaches the new actors. A restarted actor keeps its ref.

        Raises:
            ValueError: ``path`` is not a ``/``-separated string of names.
            LookupError: a segment names no child, an actor where a supervisor
                is needed (or the reverse), or an actor stopped for good.
        """
        if not isinstance(path, str) or not path or any(not part for part in path.split("/")):
            raise ValueError(
                f"Supervisor {self.name!r}: lookup path must be child names joined by '/' "
                f"(e.g. 'pool/worker-3'), got {path!r}."
            )
        parts = path.split("/")
        node: SupervisorManagement = self
        try:
            for part in parts[:-1]:
                node = node.supervisor(part)
            child = node._child(parts[-1])
            ref = node.ref(parts[-1])
        except LookupError as exc:
            raise LookupError(f"lookup({path!r}) in supervisor {self.name!r}: {exc}") from None
        if child.stopped:
            raise LookupError(
                f"lookup({path!r}) in supervisor {self.name!r}: child {parts[-1]!r} of "
                f"supervisor {node.name!r} has stopped for good; restart_child({parts[-1]!r}) "
                "brings it back."
            )
        return ref

    def tree(self) -> str:
        """A printable tree: supervisors, children, states, restarts and mailbox depths."""
        lines = [self._tree_label()]
        self._tree_lines(lines, "")
        return "\n".join(lines)

    def _tree_label(self) -> str:
        return (
            f"supervisor {self.name!r} [{self.strategy.value}] {self._state}, "
            f"restarts={self._restarts}"
        )

    def _tree_lines(self, lines: list[str], indent: str) -> None:
        listed = self._listed()
        for index, child in enumerate(listed):
            last = index == len(listed) - 1
            branch, below = ("└── ", "    ") if last else ("├── ", "│   ")
            info = _info(child)
            nested = child.nested
            if nested is not None and not child.stopped:
                lines.append(f"{indent}{branch}{nested._tree_label()} (as {info.name!r})")
                nested._tree_lines(lines, indent + below)
                continue
            cell = child.cell
            lines.append(
                f"{indent}{branch}actor {info.name!r} {info.state}, restarts={info.restarts}, "
                f"mailbox={info.mailbox_depth}/{cell.capacity}"
            )

    # -- commands -----------------------------------------------------------

    def _stopped_child(self, name: str, does: str) -> _Child:
        """Child ``name``, which must be stopped for ``does`` ("delete_child deletes", ...).

        Raises:
            LookupError: no child has that name.
            ValueError: the child is running (the message says to stop it first).
        """
        child = self._child(name)
        if not child.stopped:
            raise ValueError(
                f"Supervisor {self.name!r}: child {name!r} is running; {does} a stopped "
                f"child (await sup.stop_child({name!r}) first)."
            )
        return child

    async def _call(self, what: str, fn: Callable[[], Awaitable[object]]) -> object:
        slot = self._request(_Call(fn, ReplySlot(), what), what)
        return await slot.wait()

    async def _do_call(self, request: _Call) -> None:
        self._pending.remove(request)
        try:
            value = await request.fn()
        except Exception as exc:
            request.slot.fail(exc)
        else:
            request.slot.set(value)

    async def restart_child(self, name: str) -> None:
        """Start again child ``name``, stopped by ``stop_child`` (or for good on its own).

        It keeps its place in the start order and its ref (old refs work
        again), with a fresh, empty mailbox. Like OTP it refuses a running
        child. Not counted as a restart (no intensity cost). Cancelling the
        caller only stops the waiting.

        Raises:
            LookupError: no child has that name.
            ValueError: the child is running (``stop_child`` it first).
            RuntimeError: the supervisor is not running.
            Exception: the child failed to start (it stays stopped).
        """
        self._child(name)

        async def restart() -> None:
            child = self._stopped_child(name, "restart_child restarts")
            child.cell.reopen()
            child.cell.down = None
            child.pending_restart = None
            try:
                await self._spawn(child)
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
                self._child_crashed(child, text)
                child.stopped = False  # let _finalize report it again
                self._finalize(child, "crashed", text)
                raise

        await self._call(f"restarting child {name!r}", restart)

    async def delete_child(self, name: str) -> None:
        """Forget child ``name`` (stopped first with ``stop_child``): its name is free again.

        Its ref stays dead: messages sent to it go to dead letters.

        Raises:
            LookupError: no child has that name.
            ValueError: the child is running (``stop_child`` it first).
            RuntimeError: the supervisor is not running.
        """
        self._child(name)

        async def delete() -> None:
            child = self._stopped_child(name, "delete_child deletes")
            self._order.remove(child)
            del self._children[name]
            await trio.lowlevel.checkpoint()

        await self._call(f"deleting child {name!r}", delete)
