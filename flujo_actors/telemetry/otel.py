"""Optional OpenTelemetry export of run traces (extra ``flujo-actors[otel]``).

.. code-block:: python

    from flujo_actors.telemetry.otel import OTelHook

    runner = Flujo(pipeline, hooks=[OTelHook()])   # the global tracer provider

:class:`OTelHook` is a span listener: it turns tracing on for the runner's
runs and mirrors every span of the trace (run, step, branch, loop
iteration, attempt, fallback) as an OpenTelemetry span, live, with the
parent/child structure of the trace and usage attributes. While a step's
agent runs, the step's span is the current OpenTelemetry context, so spans
the agent creates (an instrumented HTTP client, ...) nest under it.

Only ``opentelemetry-api`` is used, and it is imported when an
:class:`OTelHook` is created, never by ``import flujo_actors``. Configure
the SDK (exporters, sampling) the usual way, or pass ``tracer_provider``.

Attributes set on every span: ``flujo.kind``, ``flujo.path``; when it ends:
``flujo.outcome``, ``flujo.attempts``, ``flujo.usage.cost_usd`` (float),
``flujo.usage.tokens``, and ``flujo.feedback`` when it failed. The root span
also has ``flujo.run_id``. A failed span gets an ERROR status.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    from ..tracing import SpanRecord

__all__ = ["OTelHook"]

# Spans during which the step's own task runs user code: made current there.
_CONTEXT_KINDS: Final = frozenset(
    {"run", "agent", "parallel", "loop", "conditional", "router", "pipeline"}
)
_FAILED: Final = frozenset({"failure", "error", "breached"})


class OTelHook:
    """Exports each traced run to OpenTelemetry (pass it in ``Flujo(hooks=[...])``).

    Args:
        tracer_provider: the provider to get the tracer from (the global one
            if None).
        tracer_name: the instrumentation scope name.
        set_current: make each step's span the current context while the
            step runs in its task (so the agent's own spans nest under it).

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        tracer_name: str = "flujo_actors",
        set_current: bool = True,
    ) -> None:
        try:
            from opentelemetry import context as otel_context
            from opentelemetry import trace as otel_trace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "OTelHook needs the OpenTelemetry API: pip install 'flujo-actors[otel]' "
                "(or opentelemetry-api)."
            ) from exc
        self._context = otel_context
        self._trace = otel_trace
        self._tracer = otel_trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
        self._set_current = set_current
        # SpanRecord -> (otel span, context token or None, task that attached it)
        self._live: dict[SpanRecord, tuple[Any, Any, Any]] = {}
        self._offsets: dict[SpanRecord, int] = {}

    def __repr__(self) -> str:
        return f"<OTelHook {len(self._live)} open spans>"

    def _ns(self, root: SpanRecord, t: float) -> int:
        return self._offsets[root] + int(t * 1e9)

    @staticmethod
    def _root(rec: SpanRecord) -> SpanRecord:
        while rec.parent is not None:
            rec = rec.parent
        return rec

    def span_started(self, span: SpanRecord) -> None:
        """Start the OpenTelemetry span of ``span`` (a child of its parent's)."""
        trace = self._trace
        if span.parent is None:
            # Trio's clock is not the wall clock (and is virtual under MockClock):
            # map it with one offset per run, taken when the run starts.
            self._offsets[span] = time.time_ns() - int(trio.current_time() * 1e9)
            parent_ctx = None  # the caller's current context: a user's span is the parent
        else:
            parent = self._live.get(span.parent)
            parent_ctx = trace.set_span_in_context(parent[0]) if parent is not None else None
        root = self._root(span)
        attributes: dict[str, Any] = {"flujo.kind": span.kind, "flujo.path": "/".join(span.path)}
        if span.parent is None:
            attributes["flujo.run_id"] = str(span.attributes.get("run_id", ""))
        otel_span = self._tracer.start_span(
            span.name,
            context=parent_ctx,
            attributes=attributes,
            start_time=self._ns(root, span.start),
        )
        token = None
        task = None
        if self._set_current and span.kind in _CONTEXT_KINDS and span.end is None:
            token = self._context.attach(trace.set_span_in_context(otel_span))
            task = trio.lowlevel.current_task()
        self._live[span] = (otel_span, token, task)

    def span_ended(self, span: SpanRecord) -> None:
        """End the OpenTelemetry span of ``span`` with its outcome and usage."""
        entry = self._live.pop(span, None)
        if entry is None:
            return
        otel_span, token, task = entry
        root = self._root(span)
        otel_span.set_attribute("flujo.outcome", span.outcome)
        otel_span.set_attribute("flujo.attempts", span.attempts)
        otel_span.set_attribute("flujo.usage.cost_usd", float(span.cost_usd))
        otel_span.set_attribute("flujo.usage.tokens", span.tokens)
        for key, value in span.attributes.items():
            if isinstance(value, (str, bool, int, float)):
                otel_span.set_attribute(f"flujo.{key}", value)
        if span.outcome in _FAILED:
            if span.feedback:
                otel_span.set_attribute("flujo.feedback", span.feedback)
            otel_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, span.feedback))
        end = span.end if span.end is not None else span.start
        otel_span.end(end_time=self._ns(root, end))
        # Detach only in the task that attached (a span closed by another
        # task, e.g. cancelled from above, leaves its task's context alone).
        if token is not None and task is trio.lowlevel.current_task():
            self._context.detach(token)
        if span.parent is None:
            del self._offsets[span]
