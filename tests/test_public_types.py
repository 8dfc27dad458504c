"""The public seams are typed with their protocols, so ``mypy --strict`` checks users' code.

Two halves, both checked on every CI run:

* at run time, the annotations of ``Flujo(...)`` and ``Step.from_callable``
  name the protocol (or the precise union) of each pluggable argument, never
  ``Any``, and a wrong object is still refused with a clear error;
* at type-check time (``make typecheck`` runs mypy over ``tests/``): each
  wrong object below carries a ``# type: ignore[...]`` that mypy's
  ``warn_unused_ignores`` (part of ``strict``) reports as unused if the
  signature stopped rejecting it, and the real components are passed with no
  ignore at all, so they must match the protocols structurally.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Final

import pytest

from flujo_actors import (
    Flujo,
    InlineExecutor,
    InMemoryLRUBackend,
    InMemoryStateBackend,
    PipelineDefinitionError,
    PostgresBackend,
    SQLiteBackend,
    Step,
    StepConfig,
    Usage,
    register_usage_extractor,
    usage_of,
)
from flujo_actors.errors import RestartIntensityExceeded

if TYPE_CHECKING:
    from pathlib import Path

    from flujo_actors.hooks import HookEvent
    from flujo_actors.tracing import SpanRecord

_ANY: Final = re.compile(r"\bAny\b")


async def echo(data: str) -> str:
    return data


STEP = Step.from_callable(echo)


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def _annotation(fn: object, param: str) -> str:
    annotation = inspect.signature(fn).parameters[param].annotation  # type: ignore[arg-type]
    assert isinstance(annotation, str), annotation  # `from __future__ import annotations`
    return annotation


@pytest.mark.parametrize(
    ("fn", "param", "names"),
    [
        (Flujo.__init__, "state_backend", ("StateBackend", "str", "os.PathLike[str]", "None")),
        (Flujo.__init__, "cache_backend", ("CacheBackend", "None")),
        (Flujo.__init__, "executor", ("Placement", "None")),
        (Flujo.__init__, "hooks", ("Hook", "SpanListener")),
        (Flujo.__init__, "resources", ("object",)),
        (Flujo.__init__, "context_model", ("type[object]",)),
        (Flujo.__init__, "initial_context_data", ("Mapping[str, object]",)),
        (Flujo.run, "initial_input", ("object",)),
        (Flujo.run_async, "initial_input", ("object",)),
        (Flujo.resume_async, "human_input", ("object",)),
        (Step.from_callable, "placement", ("Placement", "None")),
        (Step.from_callable, "retry_on", ("type[Exception]", "tuple[type[Exception], ...]")),
        (Step.from_callable, "expected_cost_usd", ("Decimal", "float", "int", "str", "None")),
        (Step.from_callable, "event_loop", ("Literal['trio', 'asyncio']", "None")),
        (Step.from_callable, "validators", ("Callable[..., object]",)),
        (StepConfig.__init__, "retry_on", ("type[Exception]",)),
        (register_usage_extractor, "fn", ("Callable[[OutputT], Usage]",)),
        (RestartIntensityExceeded.__init__, "history", ("tuple[RestartRecord, ...]",)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_pluggable_arguments_are_annotated_with_their_protocol(
    fn: object, param: str, names: tuple[str, ...]
) -> None:
    annotation = _annotation(fn, param)
    assert not _ANY.search(annotation), f"{param}: {annotation}"
    for name in names:
        assert name in annotation, f"{param}: {annotation} does not name {name}"


def test_the_placement_names_are_the_literal_type() -> None:
    from typing import get_args

    from flujo_actors.steps.placement import PLACEMENTS, PlacementName

    assert PLACEMENTS == get_args(PlacementName) == ("inline", "process", "ray")


# -- wrong objects: a type error for mypy, a clear error at run time ----------------------


def test_a_cache_backend_passed_as_state_backend_is_refused() -> None:
    lru = InMemoryLRUBackend()
    with pytest.raises(PipelineDefinitionError, match=r"^Flujo: state_backend must implement "):
        Flujo(STEP, state_backend=lru)  # type: ignore[arg-type]


def test_a_state_backend_passed_as_cache_backend_is_refused() -> None:
    memory = InMemoryStateBackend()
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: cache_backend must implement the CacheBackend protocol (async get, put); "
            f"got {memory!r}: it lacks get, put. Pass e.g. cache_backend=InMemoryLRUBackend()."
        ),
    ):
        Flujo(STEP, cache_backend=memory)  # type: ignore[arg-type]


def test_an_object_that_is_not_an_executor_is_refused() -> None:
    memory = InMemoryStateBackend()
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: executor must implement the Executor protocol (async submit, aclose); "
            f"got {memory!r}: it lacks submit. Pass e.g. executor='process' or ProcessExecutor()."
        ),
    ):
        Flujo(STEP, executor=memory)  # type: ignore[arg-type]


class SyncSubmit:
    """Has the Executor methods, but ``submit`` is a plain function."""

    def submit(self, item: object) -> object:
        return item

    async def aclose(self) -> None:
        pass


def test_an_executor_with_a_sync_submit_is_refused() -> None:
    sync = SyncSubmit()
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: executor must implement the Executor protocol (async submit, aclose); "
            f"got {sync!r}: submit is not async. Pass e.g. executor='process' or "
            "ProcessExecutor()."
        ),
    ):
        Flujo(STEP, executor=sync)  # type: ignore[arg-type]


def test_an_unknown_executor_name_is_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: executor must be one of ('inline', 'process', 'ray') or an executor, "
            "got 'threads'."
        ),
    ):
        Flujo(STEP, executor="threads")  # type: ignore[arg-type]


def test_an_unknown_placement_name_is_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Step 'echo': placement must be one of ('inline', 'process', 'ray') or an "
            "executor, got 'gpu'."
        ),
    ):
        Step.from_callable(echo, placement="gpu")  # type: ignore[arg-type]


def test_a_retry_on_that_is_not_exception_types_is_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'echo': retry_on must be "):
        Step.from_callable(echo, retry_on="ValueError")  # type: ignore[arg-type]


def test_a_backend_object_as_a_hook_is_refused() -> None:
    lru = InMemoryLRUBackend()
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: hooks[0] must be a callable taking one event (or a span listener such as "
            f"OTelHook()), got {lru!r}."
        ),
    ):
        Flujo(STEP, hooks=[lru])  # type: ignore[list-item]


# -- the real components match the protocols (no ignore needed) ----------------------------


class Listener:
    """A span listener that is not a hook (structurally a SpanListener)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def span_started(self, span: SpanRecord) -> None:
        self.names.append(span.name)

    def span_ended(self, span: SpanRecord) -> None:
        pass


async def test_the_real_components_type_check_and_run(tmp_path: Path) -> None:
    events: list[HookEvent] = []
    listener = Listener()
    sqlite = SQLiteBackend(tmp_path / "runs.db")
    lru = InMemoryLRUBackend()
    inline = InlineExecutor()
    runner = Flujo(
        STEP,
        state_backend=sqlite,
        cache_backend=lru,
        executor=inline,
        hooks=[events.append, listener],
        resources={"db": "anything"},
    )
    assert (runner.state_backend, runner.cache_backend, runner.executor) == (sqlite, lru, inline)
    result = await runner.run_async("hi")
    assert result.output == "hi"
    assert [type(e).__name__ for e in events] == [
        "RunStarted",
        "StepStarted",
        "StepFinished",
        "RunFinished",
    ]
    assert listener.names[:2] == [runner.pipeline.name, "echo"]
    await sqlite.aclose()
    await inline.aclose()
    # Paths and the other backends are accepted by the same annotations.
    assert isinstance(Flujo(STEP, state_backend=tmp_path / "b.db").state_backend, SQLiteBackend)
    assert isinstance(
        Flujo(STEP, state_backend=str(tmp_path / "c.db")).state_backend, SQLiteBackend
    )
    postgres = PostgresBackend("postgresql://nobody@localhost/none")  # connects on first use
    assert Flujo(STEP, state_backend=postgres, executor="inline").state_backend is postgres


class Reply:
    tokens = 3


class OtherReply:
    tokens = 5


def read_other(reply: OtherReply) -> Usage:
    return Usage(tokens=reply.tokens)


def read_reply(reply: Reply) -> Usage:
    return Usage(tokens=reply.tokens)


def test_a_usage_extractor_must_take_the_registered_type() -> None:
    register_usage_extractor(Reply, read_reply)  # the right type: no ignore
    reading = usage_of(Reply())
    assert isinstance(reading, Usage)
    assert reading.tokens == 3
    # A function of another type is a type error (it would get a Reply at run time).
    register_usage_extractor(OtherReply, read_other)
    register_usage_extractor(Reply, read_other)  # type: ignore[arg-type]
    register_usage_extractor(Reply, read_reply)
