"""What a streaming agent's chunks add up to (pure; shared by the engine and the executors).

Every place that drains a streaming agent feeds its chunks to one
:class:`ChunkCollector`: the chunks that are part of the output are kept
(and forwarded to the consumer), a :class:`~flujo_actors.Usage` the agent
yields is usage, not output, and SDK chunks that carry usage (openai's final
``include_usage`` chunk, anthropic's ``message_start`` / ``message_delta``)
are both output chunks and usage reports (see :class:`StreamUsage`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Final

from ..results import Usage
from .usage import NO_USAGE, UsageUnreadable, counts_of, make_usage

__all__ = ["ChunkCollector", "StreamUsage", "join_chunks"]


def join_chunks(chunks: list[Any]) -> Any:
    """A stream's output: str chunks concatenated, bytes chunks too, else the list."""
    if chunks and all(type(c) is str for c in chunks):
        return "".join(chunks)
    if chunks and all(type(c) is bytes for c in chunks):
        return b"".join(chunks)
    return chunks


class ChunkCollector:
    """One attempt's stream: its output chunks and its usage reports."""

    __slots__ = ("chunks", "usage")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.usage = StreamUsage()

    def add(self, chunk: Any) -> bool:
        """Take one chunk; True if it is part of the output (forward it to the consumer)."""
        if self.usage.observe(chunk):
            return False
        self.chunks.append(chunk)
        return True

    def output(self) -> Any:
        """The stream's output (see :func:`join_chunks`)."""
        return join_chunks(self.chunks)

    def readings(self) -> list[Usage | UsageUnreadable] | None:
        """The stream's usage reports, or None if it reported none."""
        return self.usage.readings() or None


# -- usage reported by chunks -------------------------------------------------------------------------


class StreamUsage:
    """Collects the usage a stream reports, chunk by chunk (one per attempt).

    * a :class:`Usage` the agent yields counts as it is (and is not a chunk of
      the output: :meth:`observe` returns True for it), and so does a
      :class:`~flujo_actors.policy.usage.UsageUnreadable` (what ``usage_of``
      returns for a usage it cannot read: a failure under a limit);
    * an openai chunk whose ``usage`` is set (the final chunk of a stream
      created with ``stream_options={"include_usage": True}``), or a
      responses ``response.completed`` event, counts its usage;
    * anthropic events: ``message_start`` opens a message with its input
      tokens; each ``message_delta`` carries the cumulative output tokens of
      that message (the last one counts).
    """

    __slots__ = ("_open", "reports")

    def __init__(self) -> None:
        self.reports: list[Usage | UsageUnreadable] = []
        self._open: list[Any] | None = None  # [input, output, model] of an anthropic message

    def observe(self, chunk: Any) -> bool:
        """Note ``chunk``'s usage; True if it is a :class:`Usage` (not part of the output)."""
        t = type(chunk)
        if t in NO_USAGE:
            return False
        kind = _chunk_kinds.get(t)
        if kind is None:
            kind = _chunk_kind(chunk)
            if t is not SimpleNamespace:  # a bag of attributes: its instances differ in shape
                _chunk_kinds[t] = kind
        if kind == _PLAIN:
            return False
        if kind == _USAGE:
            self.reports.append(chunk)
            return True
        if kind == _EVENT:
            self._event(chunk)
            return False
        # _WITH_USAGE: an openai-style chunk; usage is None until the last one.
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            counts = counts_of(usage)
            if counts is not None:
                model = getattr(chunk, "model", None)
                self.reports.append(
                    make_usage(counts, None, model if isinstance(model, str) else None)
                )
        return False

    def _event(self, chunk: Any) -> None:
        etype = getattr(chunk, "type", None)
        if etype == "message_start":
            self._close()
            message = getattr(chunk, "message", None)
            start = counts_of(getattr(message, "usage", None) or {}) or (None, None, None)
            model = getattr(message, "model", None)
            self._open = [start[0], start[1], model if isinstance(model, str) else None]
        elif etype == "message_delta":
            delta = counts_of(getattr(chunk, "usage", None) or {})
            if delta is not None:
                if self._open is None:
                    self._open = [None, None, None]
                if delta[0] is not None:
                    self._open[0] = delta[0]
                if delta[1] is not None:
                    self._open[1] = delta[1]  # cumulative for the message
        elif etype == "response.completed":
            response = getattr(chunk, "response", None)
            usage = getattr(response, "usage", None)
            done = counts_of(usage) if usage is not None else None
            if done is not None:
                model = getattr(response, "model", None)
                self.reports.append(
                    make_usage(done, None, model if isinstance(model, str) else None)
                )

    def _close(self) -> None:
        if self._open is not None:
            inp, out, model = self._open
            self._open = None
            if inp is not None or out is not None:
                self.reports.append(make_usage((inp, out, None), None, model))

    def readings(self) -> list[Usage | UsageUnreadable]:
        """Every usage report of the stream so far (an open anthropic message included)."""
        self._close()
        return self.reports


_PLAIN: Final = 0
_USAGE: Final = 1
_WITH_USAGE: Final = 2
_EVENT: Final = 3
_chunk_kinds: dict[type, int] = {}


def _chunk_kind(chunk: Any) -> int:
    if isinstance(chunk, (Usage, UsageUnreadable)):  # what usage_of(...) hands an agent
        return _USAGE
    etype = getattr(chunk, "type", None)
    if isinstance(etype, str) and (
        etype.startswith(("message_", "content_block_", "response.")) or etype == "ping"
    ):
        return _EVENT
    if hasattr(chunk, "usage") and not callable(getattr(chunk, "usage", None)):
        return _WITH_USAGE
    return _PLAIN
