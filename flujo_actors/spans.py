"""The finished trace of a run: :class:`Span` values (on ``PipelineResult.trace``).

A value type beside the results that hold it; :mod:`flujo_actors.tracing`
records spans while a run goes on and freezes them into these.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

__all__ = ["OUTCOMES", "Span"]

_ZERO: Final = Decimal(0)

#: Every value ``Span.outcome`` can take.
OUTCOMES: Final = frozenset({"success", "failure", "cancelled", "breached", "error", "running"})


@attrs.frozen(kw_only=True)
class Span:
    """One finished node of a run's trace.

    Attributes:
        name: the step's name, the branch's name, ``"iteration N"``,
            ``"attempt N"``, or the pipeline's name for the root.
        kind: ``"run"``, a step kind (``"agent"``, ``"parallel"``, ``"loop"``,
            ``"conditional"``, ``"router"``, ``"pipeline"``), ``"branch"``,
            ``"iteration"`` or ``"attempt"``.
        path: where the node sits in the pipeline tree (``()`` for the run).
        start: ``trio.current_time()`` when it started.
        end: ``trio.current_time()`` when it ended.
        outcome: ``"success"``, ``"failure"``, ``"cancelled"`` (stopped by a
            failing sibling, a breach or the caller), ``"breached"`` (the step
            whose usage breached the limits, and the run), or ``"error"`` (the
            step raised an internal error, or for the run: a hook failed).
        attempts: primary attempts (agent and router steps; 0 otherwise; an
            attempt span has ``attributes["attempt"]``, its number).
        cost_usd: exact cost, children included.
        tokens: tokens used, children included.
        feedback: why it failed, if it did.
        attributes: extra facts (``iterations``, ``exit_reason``,
            ``fallback_triggered``, ``run_id``, ``fallback_for``, ...).
        children: the nodes executed beneath it, in start order.
    """

    name: str
    kind: str
    path: tuple[str, ...]
    start: float
    end: float
    outcome: str
    attempts: int = 0
    cost_usd: Decimal = _ZERO
    tokens: int = 0
    feedback: str | None = None
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    children: tuple[Span, ...] = ()

    @property
    def duration_s(self) -> float:
        """``end - start`` in seconds of trio's clock."""
        return self.end - self.start

    def walk(self) -> Iterator[Span]:
        """This span and every span beneath it, depth first, in start order."""
        stack = [self]
        while stack:
            span = stack.pop()
            yield span
            stack.extend(reversed(span.children))

    def find(self, name: str, *, kind: str | None = None) -> Span | None:
        """The first span (depth first) named ``name`` (and of ``kind`` if given)."""
        for span in self.walk():
            if span.name == name and (kind is None or span.kind == kind):
                return span
        return None

    def format(self) -> str:
        """The tree as indented text: one line per span with kind, outcome and timing."""
        lines: list[str] = []

        def visit(span: Span, depth: int) -> None:
            extra = ""
            if span.attempts > 1:
                extra += f" attempts={span.attempts}"
            if span.cost_usd or span.tokens:
                extra += f" cost=${span.cost_usd} tokens={span.tokens}"
            lines.append(
                f"{'  ' * depth}{span.name} [{span.kind}] {span.outcome} "
                f"{span.start:.6f}..{span.end:.6f}{extra}"
            )
            for child in span.children:
                visit(child, depth + 1)

        visit(self, 0)
        return "\n".join(lines)
