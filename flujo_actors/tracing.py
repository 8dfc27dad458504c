# Over 500 lines on purpose: span model, recorder and text rendering of one trace tree; a split waits for #13's hook/trace consolidation.
"""Trace spans: a tree mirroring what one run actually executed, on trio's clock.

Tracing is opt-in (``Flujo(..., trace=True)``, or implied by a span listener
such as :class:`~flujo_actors.telemetry.otel.OTelHook`): a run without it
builds no span at all. With it, the run's :class:`Tracer` opens one
:class:`SpanRecord` per step execution and the finished tree is frozen into
:class:`Span` values on ``PipelineResult.trace``:

.. code-block:: text

    run                          kind "run"
      step                       kind = the step's kind ("agent", "parallel", ...)
        attempt 1, attempt 2     kind "attempt"   (only when a step needed > 1 attempt)
        <fallback step>          attributes["fallback_for"] = the primary's name
      parallel / router step
        <branch name>            kind "branch"    (one per branch that ran)
          step ...
      loop step
        iteration 1, 2, ...      kind "iteration"
          body step ...
      conditional / nested pipeline step
        step ...                 (the executed branch's steps, directly)

Times are ``trio.current_time()`` (virtual under ``MockClock``), so traces
of deterministic tests are exact.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import trio

from .spans import OUTCOMES as OUTCOMES
from .spans import Span as Span

if TYPE_CHECKING:
    from .results import StepResult
    from .steps.kinds import AnyStep

__all__ = [
    "OUTCOMES",
    "ListenerError",
    "Span",
    "SpanListener",
    "SpanRecord",
    "Tracer",
    "is_span_listener",
]

_ZERO: Final = Decimal(0)
# Span totals are sums of costs: exact, whatever the ambient decimal context (like the ledger).
_add = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN).add

# Metadata of a StepResult worth keeping on its span (small, JSON-friendly facts).
_KEPT_METADATA: Final = (
    "iterations",
    "exit_reason",
    "fallback_triggered",
    "cache_hit",
    "executed_branch_key",
    "selected_branches",
    "error_type",
)


class SpanRecord:
    """A span while its run is going on (what :class:`SpanListener` methods receive).

    Its fields have the meaning of :class:`Span`'s; ``end`` is None and
    ``outcome`` is ``"running"`` until it ends, and ``parent`` is the record
    it sits under (None for the run's root). Listeners must treat it as
    read-only; identity (``is``/hash) distinguishes records.
    """

    __slots__ = (
        "_current_iteration",
        "_fallback",
        "_iterations",
        "_retries",
        "attempts",
        "attributes",
        "children",
        "cost_usd",
        "end",
        "feedback",
        "kind",
        "name",
        "outcome",
        "parent",
        "path",
        "start",
        "tokens",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        path: tuple[str, ...],
        start: float,
        parent: SpanRecord | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.path = path
        self.start = start
        self.parent = parent
        self.end: float | None = None
        self.outcome = "running"
        self.attempts = 0
        self.cost_usd = _ZERO
        self.tokens = 0
        self.feedback: str | None = None
        self.attributes: dict[str, Any] = {}
        self.children: list[SpanRecord] = []
        # Bookkeeping for the tree builder.
        self._retries: list[tuple[float, float, str | None]] = []  # (failed at, delay, feedback)
        self._iterations = 0
        self._current_iteration: SpanRecord | None = None
        self._fallback: SpanRecord | None = None

    def __repr__(self) -> str:
        return f"<SpanRecord {self.kind} {self.name!r} {self.outcome}>"

    def freeze(self) -> Span:
        """This record and its children as immutable :class:`Span` values."""
        return Span(
            name=self.name,
            kind=self.kind,
            path=self.path,
            start=self.start,
            end=self.start if self.end is None else self.end,
            outcome=self.outcome,
            attempts=self.attempts,
            cost_usd=self.cost_usd,
            tokens=self.tokens,
            feedback=self.feedback,
            attributes=dict(self.attributes),
            children=tuple(c.freeze() for c in self.children),
        )


@runtime_checkable
class SpanListener(Protocol):
    """Receives spans live as a traced run opens and closes them.

    Both methods are called synchronously from the task executing the span
    (a step's own task for step spans), parents before children on start and
    children before parents on end; they must not block. An exception fails
    the run like a raising hook does.
    """

    def span_started(self, span: SpanRecord) -> None:
        """A span opened (``span.end`` is None)."""

    def span_ended(self, span: SpanRecord) -> None:
        """A span closed (``end``, ``outcome``, usage and ``attempts`` are final)."""


def is_span_listener(obj: object) -> bool:
    """Whether ``obj`` has the :class:`SpanListener` methods."""
    return callable(getattr(obj, "span_started", None)) and callable(
        getattr(obj, "span_ended", None)
    )


class ListenerError(Exception):
    """A span listener raised; the observer turns it into a ``HookError``."""

    def __init__(self, listener: object, what: str, cause: Exception) -> None:
        super().__init__(f"{what}: {type(cause).__name__}: {cause}")
        self.listener = listener
        self.what = what
        self.cause = cause


class Tracer:
    """Builds one run's span tree from the engine's step notifications.

    Open spans are found by their pipeline path: a step's container is the
    span of the job it runs in (the run for top-level steps, a branch span
    for parallel/router branches, the current iteration of a loop, or the
    conditional/nested-pipeline step itself). Paths of concurrently open
    spans are distinct (branches have distinct names; loop iterations are
    sequential), which is what makes a path a key.

    Args:
        name: the root span's name (the pipeline's name).
        run_id: recorded as the root's ``run_id`` attribute.
        listeners: notified of every span start and end.
    """

    __slots__ = ("_listeners", "_open", "root")

    def __init__(self, name: str, run_id: str, listeners: tuple[SpanListener, ...] = ()) -> None:
        self._listeners = listeners
        self.root = SpanRecord(name, "run", (), trio.current_time(), None)
        self.root.attributes["run_id"] = run_id
        self._open: dict[tuple[str, ...], SpanRecord] = {}
        self._started(self.root)

    # -- listener plumbing ---------------------------------------------------
    def _started(self, rec: SpanRecord) -> None:
        self._notify("span_started", rec)

    def _ended(self, rec: SpanRecord) -> None:
        self._notify("span_ended", rec)

    def _notify(self, method: str, rec: SpanRecord) -> None:
        """Call ``listener.<method>(rec)`` on every listener; the first failure is raised."""
        for listener in self._listeners:
            try:
                getattr(listener, method)(rec)
            except Exception as exc:
                raise ListenerError(listener, f"{method}({rec.name!r})", exc) from exc

    def _open_child(
        self, parent: SpanRecord, name: str, kind: str, path: tuple[str, ...], start: float
    ) -> SpanRecord:
        rec = SpanRecord(name, kind, path, start, parent)
        parent.children.append(rec)
        self._started(rec)
        return rec

    def _close_container(self, rec: SpanRecord, fallback_end: float) -> None:
        """End a branch or iteration span from what ran inside it."""
        if rec.end is not None:
            return
        kids = rec.children
        for child in kids:
            if child.end is None:
                self._cancel(child, fallback_end)
        rec.end = max((c.end for c in kids if c.end is not None), default=fallback_end)
        cost = _ZERO
        tokens = 0
        outcome = "success"
        for child in kids:
            cost = _add(cost, child.cost_usd)
            tokens += child.tokens
            if child.outcome != "success":
                outcome = child.outcome
                rec.feedback = child.feedback
        rec.cost_usd, rec.tokens = cost, tokens
        rec.outcome = outcome if kids else "cancelled"
        if self._open.get(rec.path) is rec:
            del self._open[rec.path]
        self._ended(rec)

    def _container(self, job_path: tuple[str, ...], index: int) -> SpanRecord:
        if not job_path:
            return self.root
        rec = self._open.get(job_path)
        if rec is not None:
            if rec.kind != "loop":
                return rec  # a branch, or a conditional / nested pipeline step
            current = rec._current_iteration
            if index == 0 or current is None:
                now = trio.current_time()
                if current is not None:
                    self._close_container(current, now)
                rec._iterations += 1
                n = rec._iterations
                current = self._open_child(rec, f"iteration {n}", "iteration", job_path, now)
                current.attributes["iteration"] = n
                rec._current_iteration = current
            return current
        # A parallel/router branch: its job path is (*owner, branch name).
        owner = self._open.get(job_path[:-1], self.root)
        branch = self._open_child(owner, job_path[-1], "branch", job_path, trio.current_time())
        self._open[job_path] = branch
        return branch

    # -- notifications from the run ----------------------------------------------
    def step_started(self, path: tuple[str, ...], index: int, step: AnyStep) -> SpanRecord:
        """Open the span of ``step`` (at ``path``, position ``index`` of its pipeline)."""
        parent = self._container(path[:-1], index)
        rec = self._open_child(parent, step.name, step.kind, path, trio.current_time())
        self._open[path] = rec
        return rec

    def retried(self, path: tuple[str, ...], delay_s: float, feedback: str | None) -> None:
        """An attempt of the step at ``path`` failed and will be retried after ``delay_s``."""
        rec = self._open.get(path)
        if rec is not None:
            rec._retries.append((trio.current_time(), delay_s, feedback))

    def fallback(self, path: tuple[str, ...], fallback: AnyStep) -> None:
        """The step at ``path`` spent its attempts; ``fallback`` runs now, beneath it."""
        rec = self._open.get(path)
        if rec is None:
            return
        fb_path = (*path, fallback.name)
        child = self._open_child(rec, fallback.name, fallback.kind, fb_path, trio.current_time())
        child.attributes["fallback_for"] = rec.name
        rec._fallback = child
        self._open[fb_path] = child

    def step_ended(self, rec: SpanRecord, result: StepResult) -> None:
        """Close ``rec`` with ``result`` (and what was left open beneath it)."""
        now = trio.current_time()
        self._fill(rec, result, now)
        fb = rec._fallback
        if fb is not None and fb.end is None:
            fb_result = result.step_history[0] if result.step_history else None
            if fb_result is not None:
                self._fill(fb, fb_result, now)
                self._finish_children(fb, now)
                if self._open.get(fb.path) is fb:
                    del self._open[fb.path]
                self._ended(fb)
            else:
                self._cancel(fb, now)
        self._finish_children(rec, now)
        if self._open.get(rec.path) is rec:
            del self._open[rec.path]
        self._ended(rec)

    def step_breached(self, rec: SpanRecord, result: StepResult) -> None:
        """Close ``rec`` as the step whose usage (``result``) breached the run's limits."""
        now = trio.current_time()
        self._fill(rec, result, now)
        rec.outcome = "breached"
        self._finish_children(rec, now)
        if self._open.get(rec.path) is rec:
            del self._open[rec.path]
        self._ended(rec)

    def step_cancelled(self, rec: SpanRecord, outcome: str = "cancelled") -> None:
        """Close ``rec`` (and what is open beneath it) as cancelled or errored."""
        self._cancel(rec, trio.current_time(), outcome)

    def finish(self, outcome: str, cost: Decimal, tokens: int, feedback: str | None = None) -> Span:
        """Close the root (and anything still open) and return the frozen tree."""
        now = trio.current_time()
        root = self.root
        for child in root.children:
            if child.end is None:
                self._cancel(child, now)
        root.end = now
        root.outcome = outcome
        root.cost_usd = cost
        root.tokens = tokens
        root.feedback = feedback
        self._open.clear()
        self._ended(root)
        return root.freeze()

    # -- helpers -------------------------------------------------------------------
    def _fill(self, rec: SpanRecord, result: StepResult, now: float) -> None:
        rec.end = now
        rec.outcome = "success" if result.success else "failure"
        rec.attempts = result.attempts if rec.kind in ("agent", "router") else 0
        rec.cost_usd = result.cost_usd
        rec.tokens = result.token_counts
        rec.feedback = result.feedback
        meta = result.metadata
        if meta:
            for key in _KEPT_METADATA:
                if key in meta:
                    rec.attributes[key] = meta[key]
        if rec.attempts > 1 and rec._retries:
            self._attempt_spans(rec, result, now)

    def _attempt_spans(self, rec: SpanRecord, result: StepResult, now: float) -> None:
        # Attempt spans are built when the step ends: attempt k runs from the
        # end of the backoff after failure k-1 to failure k (or the step's end).
        start = rec.start
        spans: list[SpanRecord] = []
        for n, (failed_at, delay, feedback) in enumerate(rec._retries, 1):
            a = SpanRecord(f"attempt {n}", "attempt", rec.path, start, rec)
            a.end, a.outcome, a.feedback = failed_at, "failure", feedback
            a.attributes["attempt"] = n
            spans.append(a)
            start = failed_at + delay
        last = SpanRecord(f"attempt {len(spans) + 1}", "attempt", rec.path, start, rec)
        fb = rec._fallback
        last.end = fb.start if fb is not None else now
        primary_ok = result.success and not result.metadata.get("fallback_triggered")
        last.outcome = "success" if primary_ok else "failure"
        last.attributes["attempt"] = len(spans) + 1
        if not primary_ok:
            last.feedback = result.metadata.get("original_error", result.feedback)
        spans.append(last)
        rec.children[:0] = spans
        for a in spans:
            self._started(a)
            self._ended(a)

    def _finish_children(self, rec: SpanRecord, now: float) -> None:
        for child in rec.children:
            if child.end is None:
                if child.kind in ("branch", "iteration"):
                    self._close_container(child, now)
                else:
                    self._cancel(child, now)
        rec._current_iteration = None
        if rec.kind == "loop":
            rec.attributes.setdefault("iterations", rec._iterations)

    def _cancel(self, rec: SpanRecord, now: float, outcome: str = "cancelled") -> None:
        if rec.end is not None:
            return
        for child in rec.children:
            if child.end is None:
                self._cancel(child, now)
        rec.end = now
        rec.outcome = outcome
        if rec.kind in ("branch", "iteration"):
            cost = _ZERO
            tokens = 0
            for child in rec.children:
                cost = _add(cost, child.cost_usd)
                tokens += child.tokens
            rec.cost_usd, rec.tokens = cost, tokens
        if self._open.get(rec.path) is rec:
            del self._open[rec.path]
        self._ended(rec)
