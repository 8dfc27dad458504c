"""The kernel's mailboxes: where an actor's messages wait until its loop takes them.

Every actor (user actors, supervised children, the runtime's step actors, the
governor, the persistence actor) owns exactly one mailbox, held by its
:class:`~flujo_actors.actors.ActorCell`, and is run by the one actor loop
(:func:`~flujo_actors.actors.run_actor`). The loop only needs the small
interface all three types share:

* ``await put(m)`` / ``put_nowait(m)`` (raises ``trio.WouldBlock`` when full,
  ``trio.ClosedResourceError`` when closed), ``await get()`` (raises
  ``trio.EndOfChannel`` once closed and empty), ``await get_batch()``
  (everything queued, at least one message), ``depth``, ``capacity``;
* ``finish()``: a graceful close (queued messages are still delivered, then
  the loop sees the end); ``close()``: refuse new messages and hand back the
  queued ones (the cell sends them to dead letters);
* ``push_front``/``take_front``: one message put back at the head (a
  supervisor hands a restarted actor the message its predecessor held).

The three types:

* :class:`Mailbox`: a bounded trio memory channel. Senders wait while it is
  full (backpressure). User actors and reused step actors (a loop body's).
* :class:`OneShotMailbox`: exactly one message, no channel (creating one costs
  more than the rest of a trivial step). A step actor of a single-use chain
  receives one frame and ends, so its mailbox is this: the frame sits in it
  (depth 1) until the actor's loop takes it.
* :class:`BatchingMailbox`: unbounded, never blocks a sender and is not a
  checkpoint; its receiver wakes once per ``wake_every`` tells, or at once
  for a :class:`Request` (an ask) or a close, and takes the whole queue in one
  turn. *Admission*: :meth:`BatchingMailbox.offer` queues a message only if
  the owner's ``admit`` rule accepts it, which is how the governor tells the
  usage updates that provably cannot breach a limit and asks the others.
  *Merging*: an owner may fold a tell into the message at the queue's tail
  (:meth:`BatchingMailbox.tail`, :meth:`BatchingMailbox.merged`), so a flood
  of tells costs no object and no queue slot each; the merged tells still
  count in ``depth`` and towards ``wake_every``.

:class:`Request` is the ask of a batching mailbox: the message carries its
own one-shot reply (the asking task parks itself; the actor reschedules it),
so an ask costs no Event and no channel.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any, ClassVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["BatchingMailbox", "Mailbox", "OneShotMailbox", "Request", "check_capacity"]


def check_capacity(name: str, capacity: int | float) -> None:
    """Raise ``ValueError`` unless ``capacity`` is an int >= 0 or ``math.inf``."""
    if capacity != math.inf and (not isinstance(capacity, int) or capacity < 0):
        raise ValueError(
            f"Actor {name!r}: mailbox_size must be an int >= 0 or math.inf, got {capacity!r}."
        )


class _Front:
    """The head slot shared by every mailbox type (see ``push_front``)."""

    __slots__ = ("_front", "_has_front")

    def __init__(self) -> None:
        self._front: Any = None
        self._has_front = False

    def push_front(self, message: Any) -> None:
        self._front = message
        self._has_front = True

    @property
    def has_front(self) -> bool:
        """Whether a message waits in the head slot."""
        return self._has_front

    def take_front(self) -> tuple[Any, bool]:
        if not self._has_front:
            return None, False
        message = self._front
        self._front = None
        self._has_front = False
        return message, True


class Mailbox(_Front):
    """A bounded FIFO mailbox on a trio memory channel (``math.inf``: unbounded)."""

    __slots__ = ("capacity", "closed", "receive", "send")

    def __init__(self, capacity: int | float = 1024) -> None:
        self.capacity = capacity
        self.send, self.receive = trio.open_memory_channel[Any](capacity)
        self.closed = False
        super().__init__()

    @property
    def depth(self) -> int:
        """Messages waiting (the head slot included)."""
        return self.send.statistics().current_buffer_used + self._has_front

    async def put(self, message: Any) -> None:
        """Queue ``message``, waiting while the mailbox is full; a checkpoint."""
        await self.send.send(message)

    def put_nowait(self, message: Any) -> None:
        self.send.send_nowait(message)

    async def get(self) -> Any:
        if self._has_front:
            await trio.lowlevel.checkpoint()
            return self.take_front()[0]
        return await self.receive.receive()

    def get_nowait(self) -> Any:
        if self._has_front:
            return self.take_front()[0]
        return self.receive.receive_nowait()

    async def get_batch(self) -> list[Any]:
        """At least one message: the first awaited, then whatever else is queued."""
        batch = [await self.get()]
        receive_nowait = self.receive.receive_nowait
        while True:
            try:
                batch.append(receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return batch

    def finish(self) -> None:
        """Close gracefully: what is queued is still delivered, then ``get`` ends."""
        self.send.close()

    def close(self) -> list[Any]:
        """Refuse new messages; return the queued ones (head slot first)."""
        self.closed = True
        self.send.close()
        left: list[Any] = []
        message, had = self.take_front()
        if had:
            left.append(message)
        while True:
            try:
                left.append(self.receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return left

    def reopen(self) -> None:
        """A fresh, empty channel (a supervisor restarting a stopped permanent child)."""
        self.send, self.receive = trio.open_memory_channel[Any](self.capacity)
        self.closed = False


class OneShotMailbox(_Front):
    """A mailbox for exactly one message: it ends once that message was taken.

    A second message is refused as if the mailbox were closed (it goes to
    dead letters). No channel is created: putting and taking are plain
    attribute writes, and ``put`` is still a checkpoint like any send.
    """

    __slots__ = ("closed",)

    capacity: ClassVar[int] = 1

    def __init__(self, message: Any = None, *, full: bool = False) -> None:
        # The head slot is set here directly (no super().__init__): one per branch and item.
        self._front = message
        self._has_front = full
        self.closed = full

    @property
    def depth(self) -> int:
        return 1 if self._has_front else 0

    async def put(self, message: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.put_nowait(message)

    def put_nowait(self, message: Any) -> None:
        if self.closed:
            raise trio.ClosedResourceError("a one-shot mailbox takes one message")
        self.closed = True
        self.push_front(message)

    async def get(self) -> Any:
        """The message, or ``trio.EndOfChannel`` once it was taken.

        Not a checkpoint: the message is in the actor's hands when it starts
        (the first-message fast path), and the step it carries checkpoints.
        """
        return self.get_nowait()

    def get_nowait(self) -> Any:
        message, had = self.take_front()
        if not had:
            raise trio.EndOfChannel
        return message

    async def get_batch(self) -> list[Any]:
        return [await self.get()]

    def finish(self) -> None:
        self.closed = True

    def close(self) -> list[Any]:
        self.closed = True
        message, had = self.take_front()
        return [message] if had else []

    def reopen(self) -> None:
        self.closed = False


class Request:
    """A message of a :class:`BatchingMailbox` that may be asked: it carries its reply.

    The asking task parks in ``waiter``; the actor sets ``answer`` (or
    ``error``) and calls :meth:`reply`, which reschedules it. Subclasses add
    their fields and ``__slots__``. ``DEAD_LETTER``: whether a message left in
    a closed mailbox goes to dead letters (False for messages that only
    matter to a ledger that is gone).
    """

    __slots__ = ("answer", "error", "waiter")

    DEAD_LETTER: ClassVar[bool] = True

    def __init__(self) -> None:
        self.waiter: trio.lowlevel.Task | None = None
        self.answer: Any = None
        self.error: BaseException | None = None

    def reply(self) -> None:
        """Wake the asker, if one still waits (never blocks)."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)

    def fail(self, error: BaseException) -> bool:
        """Answer with ``error``; False if nobody waits (a tell)."""
        if self.waiter is None:
            return False
        self.error = error
        self.reply()
        return True


def _admit_all(_message: Any) -> bool:
    return True


class BatchingMailbox(_Front):
    """Unbounded mailbox that wakes its receiver in batches (see the module docstring).

    Args:
        wake_every: queued tells that wake the receiver (an ask, a flush or a
            close wakes it at once).
        admit: the admission rule of :meth:`offer` (accepts everything if None).
    """

    __slots__ = (
        "_merged",
        "_parked",
        "_queue",
        "admit",
        "closed",
        "finishing",
        "wake_every",
    )

    capacity: ClassVar[float] = math.inf

    def __init__(self, wake_every: int, admit: Callable[[Any], bool] | None = None) -> None:
        self.wake_every = wake_every
        self.admit = admit if admit is not None else _admit_all
        self._queue: collections.deque[Any] = collections.deque()
        # Tells folded into a queued message (see ``merged``): counted, not queued.
        self._merged = 0
        self._parked: trio.lowlevel.Task | None = None
        self.closed = False
        self.finishing = False
        super().__init__()

    @property
    def depth(self) -> int:
        """Messages waiting, merged tells included (the head slot too)."""
        return len(self._queue) + self._merged + self._has_front

    def tail(self) -> Any:
        """The last message queued and not yet taken by the receiver (None if empty).

        Once the receiver takes a batch, its messages are no longer the tail:
        what ``tail`` returns may be changed in place until the next message
        is queued behind it (see :meth:`merged`).
        """
        queue = self._queue
        return queue[-1] if queue else None

    def merged(self) -> None:
        """Count a tell its sender folded into :meth:`tail` instead of queueing it.

        It counts in ``depth`` and towards ``wake_every`` like a queued tell.
        Never blocks; not a checkpoint.
        """
        self._merged = merged = self._merged + 1
        # Once past wake_every, the receiver is woken already: no call per later tell.
        if self._parked is not None and len(self._queue) + merged >= self.wake_every:
            self._wake()

    def _wake(self) -> None:
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    def offer(self, message: Any) -> bool:
        """Queue ``message`` if ``admit(message)`` accepts it; never blocks, not a checkpoint.

        Raises:
            trio.ClosedResourceError: the mailbox is closed (nothing was queued).
        """
        if not self.admit(message):
            return False
        self.put_nowait(message)
        return True

    def put_nowait(self, message: Any) -> None:
        """Queue a tell (never blocks, not a checkpoint)."""
        if self.closed:
            raise trio.ClosedResourceError("mailbox closed")
        queue = self._queue
        queue.append(message)
        if len(queue) + self._merged >= self.wake_every:
            self._wake()

    async def put(self, message: Any) -> None:
        self.put_nowait(message)
        await trio.lowlevel.checkpoint()

    async def ask(self, request: Request) -> Any:
        """Queue ``request``, wake the receiver and wait for its answer.

        Always a schedule point. Cancelled while waiting, the request stays
        queued (it is still applied); only its answer is dropped.

        Raises:
            trio.ClosedResourceError: the mailbox is closed.
        """
        if self.closed:
            raise trio.ClosedResourceError("mailbox closed")
        request.waiter = trio.lowlevel.current_task()
        self._queue.append(request)
        self._wake()

        def abort(_: Any) -> trio.lowlevel.Abort:
            request.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if request.error is not None:
            raise request.error
        return request.answer

    async def _wait_nonempty(self) -> None:
        while not self._queue and not self._has_front:
            if self.closed or self.finishing:
                raise trio.EndOfChannel
            self._parked = trio.lowlevel.current_task()

            def unpark(_: Any) -> trio.lowlevel.Abort:
                self._parked = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(unpark)

    async def get_batch(self) -> Sequence[Any]:
        """Everything queued, in order; parks until a wake-up while empty.

        Not a checkpoint when messages are queued (the receiver takes a whole
        burst in one turn).

        Raises:
            trio.EndOfChannel: the mailbox was finished (or closed) and is empty.
        """
        await self._wait_nonempty()
        batch = self._queue
        self._queue = collections.deque()
        self._merged = 0
        message, had = self.take_front()
        if had:
            batch.appendleft(message)
        return batch

    async def get(self) -> Any:
        await self._wait_nonempty()
        message, had = self.take_front()
        return message if had else self._pop()

    def _pop(self) -> Any:
        message = self._queue.popleft()
        if not self._queue:
            self._merged = 0  # merged tells live in the tail: it is gone too
        return message

    def get_nowait(self) -> Any:
        message, had = self.take_front()
        if had:
            return message
        if self._queue:
            return self._pop()
        if self.closed or self.finishing:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def finish(self) -> None:
        """Let the receiver take what is queued, then end (wakes it at once)."""
        self.finishing = True
        self._wake()

    def close(self) -> list[Any]:
        """Refuse new messages; return the queued ones (and wake the receiver)."""
        self.closed = True
        left = list(self._queue)
        self._queue.clear()
        self._merged = 0
        message, had = self.take_front()
        if had:
            left.insert(0, message)
        self._wake()
        return left

    def reopen(self) -> None:
        self.closed = False
        self.finishing = False
