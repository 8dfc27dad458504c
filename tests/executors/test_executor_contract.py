"""One contract, every executor: inline, process pool (trio-parallel) and Ray.

Each executor must return the output and its usage, bring the agent's error
back as data (re-raised with its type), stop remote work when the step's
cancel scope fires, turn a dead worker into a retryable ``ExecutorLost``,
serve many concurrent frames, and round-trip the context. The process
executor runs when trio-parallel is installed; Ray runs with ``-m ray``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import select
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from flujo_actors import Flujo, PipelineContext, PipelineDefinitionError, Step
from flujo_actors.errors import ExecutorLost
from flujo_actors.executors import (
    ErrorInfo,
    Executor,
    InlineExecutor,
    RemoteAgentError,
    WorkItem,
    check_placement,
    resolve_executor,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from tests.executors.ray_bounds import bounded_ray_executor
else:  # pytest imports test modules by file name (tests/ has no __init__.py)
    from ray_bounds import bounded_ray_executor

# -- agents and types (module level: workers import them by reference) ---------------


@attrs.frozen
class Priced:
    value: int
    cost_usd: float = 0.25
    token_counts: int = 7


@attrs.define
class NotesContext(PipelineContext):
    count: int = 0
    notes: list[str] = attrs.Factory(list)


class QuotaError(ValueError):
    pass


class TwoArgError(Exception):
    """Cannot be pickled (holds a lock) nor rebuilt from its message (two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")
        self.lock = threading.Lock()


def priced_sync(x: int) -> Priced:
    return Priced(x * 2)


async def priced_async(x: int) -> Priced:
    await trio.lowlevel.checkpoint()
    return Priced(x * 2)


def _logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


# A plain def decorator around an async def: the agent looks sync, returns a coroutine.
priced_wrapped = _logged(priced_async)


def priced_coroutine(x: int) -> Any:
    return priced_async(x)


def over_quota(x: int) -> int:
    raise QuotaError(f"out of quota for {x}")


def two_arg_failure(x: int) -> int:
    raise TwoArgError("a", "b")


def noter(x: str, *, context: NotesContext) -> str:
    context.count += 1
    context.notes.append(x)
    context.scratchpad["last"] = x
    return x.upper()


def count_only(x: str, *, context: NotesContext) -> str:
    context.count += 1
    return x


def noter_then_fail(x: str, *, context: NotesContext) -> str:
    context.count += 100
    context.notes.append("leaked")
    raise RuntimeError("after mutating")


def crash_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).write_text("crashed")
        os._exit(3)
    return "recovered"


def crash_always(marker: str) -> str:
    os._exit(3)


def returns_lock(x: int) -> Any:
    return threading.Lock()


def echo(x: Any) -> Any:
    return x


async def spell(word: str) -> AsyncIterator[str]:
    for ch in word:
        yield ch.upper()


def with_resources(x: int, *, resources: dict[str, int]) -> int:
    return x + resources["offset"]


def my_pid(x: Any) -> int:
    return os.getpid()


def write_marker(path: str) -> str:
    Path(path).write_text("called")
    return "called"


def _signal_started(fifo: str) -> None:
    # Opening a FIFO for writing blocks until the test has it open for reading
    # (it has, before the run starts); the pid tells the test which process to watch.
    with open(fifo, "w") as f:
        f.write(f"{os.getpid()}\n")


def stuck_sync(paths: tuple[str, str]) -> str:
    fifo, finished = paths
    _signal_started(fifo)
    time.sleep(3600)  # blocking, not cancellable from inside
    Path(finished).write_text("finished")
    return "finished"


async def stuck_async(paths: tuple[str, str]) -> str:
    fifo, finished = paths
    _signal_started(fifo)
    await trio.sleep(3600)
    await trio.Path(finished).write_text("finished")
    return "finished"


def make_adder(n: int) -> Callable[[int], Priced]:
    def add(x: int) -> Priced:  # a closure: cloudpickle sends it by value
        return Priced(x + n, cost_usd=0.01, token_counts=1)

    return add


# -- fixtures ------------------------------------------------------------------------

REMOTE = ("process", "ray")
WHERE = {"process": "process pool", "ray": "Ray cluster"}


@pytest.fixture(params=["inline", "process", pytest.param("ray", marks=pytest.mark.ray)])
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "ray":
        request.getfixturevalue("ray_cluster")
    return name


@pytest.fixture
async def executor(kind: str) -> AsyncIterator[Executor]:
    """A fresh executor per test (it opens lazily), closed when the test ends."""
    made: Executor
    if kind == "inline":
        made = InlineExecutor()
    elif kind == "process":
        from flujo_actors.executors.process import ProcessExecutor

        made = ProcessExecutor(max_workers=2, worker_type="forkserver")
    else:
        made = bounded_ray_executor()  # real-time bounds far beyond what load costs
    yield made
    await made.aclose()


@pytest.fixture
def remote(kind: str) -> str:
    """The executor kind, for tests about worker processes (conftest.py never pairs it
    with ``inline``: that combination is not generated, rather than skipped)."""
    assert kind in REMOTE, kind
    return kind


class Started:
    """A FIFO an agent writes its pid into; the test awaits it without polling."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "started.fifo"
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    async def wait(self) -> int:
        buf = b""
        while not buf.endswith(b"\n"):
            await trio.lowlevel.wait_readable(self.fd)
            buf += os.read(self.fd, 64)
        return int(buf)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    s = Started(tmp_path)
    yield s
    s.close()


def _exits_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone or exits within ``seconds`` (a pidfd: no polling).

    A killed worker may still be tearing down when its executor reports it
    (Ray answers once the worker's socket closes); it runs no user code by then.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def _item(fn: Any, data: Any, *, context: Any = None, deadline: float | None = None) -> WorkItem:
    spec = Step.from_callable(fn).spec
    assert spec is not None
    return WorkItem(
        step_name=fn.__name__, agent=spec, data=data, context=context, deadline=deadline
    )


# -- result and usage ----------------------------------------------------------------


@pytest.mark.parametrize("agent", [priced_sync, priced_async], ids=["sync", "async"])
async def test_output_and_usage_come_back(executor: Executor, agent: Any) -> None:
    step = Step.from_callable(agent, name="priced", placement=executor)
    result = await Flujo(step).run_async(21)
    assert result.success is True
    assert result.output == Priced(42)
    first = result.step_history[0]
    assert (first.cost_usd, first.token_counts, first.attempts) == (Decimal("0.25"), 7, 1)
    assert (result.total_cost_usd, result.total_tokens) == (Decimal("0.25"), 7)


@pytest.mark.parametrize(
    "agent", [priced_wrapped, priced_coroutine], ids=["wrapped", "returns-coroutine"]
)
async def test_an_awaitable_from_a_sync_agent_is_awaited_where_it_runs(
    executor: Executor, agent: Any
) -> None:
    # The awaitable is awaited under the step's deadline, which the item carries as wall
    # clock: far beyond what a worker starting under load can cost.
    step = Step.from_callable(agent, name="priced", placement=executor, timeout_s=600)
    result = await Flujo(step).run_async(21)
    assert result.success is True
    assert result.output == Priced(42)
    first = result.step_history[0]
    assert (first.cost_usd, first.token_counts) == (Decimal("0.25"), 7)


async def test_work_result_carries_usage_and_the_worker(executor: Executor, kind: str) -> None:
    result = await executor.submit(_item(priced_sync, 5))
    assert result.error is None
    assert (result.output, result.cost_usd, result.token_counts) == (Priced(10), Decimal("0.25"), 7)
    assert result.context_updates == {}
    pid = int(result.worker.split()[1])
    assert (pid == os.getpid()) is (kind == "inline")


async def test_run_executor_applies_to_every_step(kind: str, executor: Executor) -> None:
    pipeline = Step.from_callable(priced_sync, name="a") >> Step.from_callable(echo, name="b")
    result = await Flujo(pipeline, executor=executor).run_async(1)
    assert result.success is True
    assert result.output == Priced(2)
    assert executor.statistics().completed == 2  # type: ignore[attr-defined]


async def test_a_step_placed_inline_overrides_the_run_executor(
    kind: str, executor: Executor
) -> None:
    pipeline = Step.from_callable(my_pid, name="placed") >> Step.from_callable(
        my_pid, name="here", placement="inline"
    )
    result = await Flujo(pipeline, executor=executor).run_async(0)
    placed, here = (r.output for r in result.step_history)
    assert here == os.getpid()
    assert (placed == os.getpid()) is (kind == "inline")


async def test_a_streaming_agent_returns_its_chunks_joined(executor: Executor) -> None:
    result = await Flujo(Step.from_callable(spell, placement=executor)).run_async("abc")
    assert result.output == "ABC"


async def test_resources_reach_an_agent_that_declares_them(executor: Executor) -> None:
    step = Step.from_callable(with_resources, placement=executor)
    result = await Flujo(step, resources={"offset": 100}).run_async(1)
    assert result.output == 101


# -- errors as data ------------------------------------------------------------------


async def test_agent_error_is_reraised_with_its_type(executor: Executor) -> None:
    step = Step.from_callable(over_quota, placement=executor, max_retries=1)
    result = await Flujo(step).run_async(3)
    failed = result.step_history[-1]
    assert result.success is False
    assert failed.attempts == 2
    assert failed.feedback == "QuotaError: out of quota for 3"
    assert failed.metadata["error_type"] == "QuotaError"


async def test_error_data_has_type_message_and_traceback(executor: Executor, kind: str) -> None:
    result = await executor.submit(_item(over_quota, 4))
    error = result.error
    assert error is not None
    assert result.output is None
    assert error.type_name == f"{QuotaError.__module__}.QuotaError"
    assert error.message == "out of quota for 4"
    assert 'raise QuotaError(f"out of quota for {x}")' in error.traceback
    exc = error.to_exception()
    assert type(exc) is QuotaError
    assert str(exc) == "out of quota for 4"
    if kind in REMOTE:
        assert exc.__notes__ == [f"Remote traceback:\n{error.traceback.rstrip()}"]


async def test_unrebuildable_error_becomes_remote_agent_error(
    remote: str, executor: Executor
) -> None:
    step = Step.from_callable(two_arg_failure, placement=executor, max_retries=0)
    result = await Flujo(step).run_async(1)
    assert result.step_history[-1].feedback == (
        f"RemoteAgentError: {TwoArgError.__module__}.TwoArgError: a/b"
    )


def test_error_info_rebuilds_by_name_or_falls_back() -> None:
    rebuilt = ErrorInfo(
        module="builtins", qualname="KeyError", message="k", traceback="tb"
    ).to_exception()
    assert type(rebuilt) is KeyError
    assert rebuilt.__notes__ == ["Remote traceback:\ntb"]
    missing = ErrorInfo(module="no.such.module", qualname="Gone", message="m", traceback="tb")
    exc = missing.to_exception()
    assert isinstance(exc, RemoteAgentError)
    assert str(exc) == "no.such.module.Gone: m"
    assert (exc.type_name, exc.remote_traceback) == ("no.such.module.Gone", "tb")


async def test_unpicklable_output_fails_the_step_with_a_clear_message(
    remote: str, executor: Executor
) -> None:
    step = Step.from_callable(returns_lock, placement=executor, max_retries=0)
    result = await Flujo(step).run_async(1)
    assert result.step_history[-1].feedback == (
        "SerializationError: Step 'returns_lock': its output of type lock cannot be sent back "
        f"from the {WHERE[remote]}: TypeError: cannot pickle '_thread.lock' object. Return "
        "picklable values (plain data, or instances of importable classes), or run this step "
        "inline (placement='inline')."
    )


async def test_unpicklable_input_is_refused_before_sending(remote: str, executor: Executor) -> None:
    step = Step.from_callable(echo, placement=executor, max_retries=0)
    result = await Flujo(step).run_async(threading.Lock())
    assert result.step_history[-1].feedback == (
        f"SerializationError: Step 'echo': its input of type lock cannot be sent to the "
        f"{WHERE[remote]}: TypeError: cannot pickle '_thread.lock' object. Make it picklable, "
        "or run this step inline (placement='inline')."
    )
    assert executor.statistics().submitted == 0  # type: ignore[attr-defined]


async def test_an_expired_item_is_not_started(executor: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "called"
    result = await executor.submit(_item(write_marker, str(marker), deadline=time.time() - 1))
    assert result.error is not None
    assert result.error.type_name == "TimeoutError"
    assert result.error.message == (
        "step 'write_marker' attempt 1 reached its deadline before a worker started it"
    )
    assert not marker.exists()


# -- cancellation reaches the remote work ------------------------------------------------


@pytest.mark.parametrize("agent", [stuck_sync, stuck_async], ids=["sync", "async"])
async def test_timeout_stops_the_remote_work(
    kind: str,
    executor: Executor,
    agent: Any,
    started: Started,
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
) -> None:
    # conftest.py does not generate inline x sync: a blocking sync agent cannot be
    # interrupted inline (that is what a process pool is for).
    assert not (kind == "inline" and agent is stuck_sync)
    finished = tmp_path / "finished"
    # The timeout fires when the test jumps the mock clock, but the work item carries it
    # as a wall-clock deadline: a worker that starts the call later than that (a Ray worker
    # or actor starting under load) times it out before calling the agent, which then never
    # signals. An hour of wall clock is far beyond any start-up.
    step = Step.from_callable(
        agent, name="stuck", placement=executor, timeout_s=3600, max_retries=0
    )
    results = []

    async def run() -> None:
        results.append(await Flujo(step).run_async((str(started.path), str(finished))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        pid = await started.wait()
        mock_clock.jump(3600)
    [result] = results
    assert result.success is False
    assert re.match(
        r"^TimeoutError: [Ss]tep 'stuck' .*timed out after .*3600",
        str(result.step_history[-1].feedback),
    )
    assert trio.current_time() == 3600
    if kind in REMOTE:
        assert pid != os.getpid()
        # The worker was stopped, not left running (in a thread; the bound is a hang guard).
        assert await trio.to_thread.run_sync(_exits_within, pid, 60.0)
        assert executor.statistics().cancelled == 1  # type: ignore[attr-defined]
    assert not finished.exists()


async def test_a_failing_sibling_stops_the_remote_branch(
    kind: str, executor: Executor, started: Started, tmp_path: Path
) -> None:
    finished = tmp_path / "finished"

    async def fail_once_started(data: Any) -> None:
        await started.wait()
        raise RuntimeError("sibling failed")

    agent = stuck_async if kind == "inline" else stuck_sync
    fan = Step.parallel(
        "fan",
        {
            "slow": Step.from_callable(agent, name="stuck", placement=executor, max_retries=0),
            "bad": Step.from_callable(fail_once_started, max_retries=0),
        },
    )
    result = await Flujo(fan).run_async((str(started.path), str(finished)))
    assert result.success is False
    assert executor.statistics().cancelled == 1  # type: ignore[attr-defined]
    assert not finished.exists()


# -- worker loss ---------------------------------------------------------------------


async def test_worker_crash_is_retried_by_the_supervisor(
    remote: str, executor: Executor, tmp_path: Path
) -> None:
    step = Step.from_callable(crash_once, placement=executor, max_retries=1)
    result = await Flujo(step).run_async(str(tmp_path / "crashed"))
    assert result.success is True
    assert result.output == "recovered"
    assert result.step_history[-1].attempts == 2
    stats = executor.statistics()  # type: ignore[attr-defined]
    assert (stats.lost, stats.completed) == (1, 1)


async def test_worker_crash_without_retries_fails_with_executor_lost(
    remote: str, executor: Executor, tmp_path: Path
) -> None:
    step = Step.from_callable(crash_always, placement=executor, max_retries=0)
    result = await Flujo(step).run_async(str(tmp_path / "never"))
    failed = result.step_history[-1]
    assert result.success is False
    assert failed.metadata["error_type"] == "ExecutorLost"
    detail = " (exit code 3)" if remote == "process" else " (WorkerCrashedError)"
    where = (
        "process-pool worker running it died"
        if remote == "process"
        else ("Ray worker running it was lost")
    )
    assert failed.feedback == (
        f"ExecutorLost: Step 'crash_always' attempt 1: the {where}{detail}. Worker loss is "
        "retryable: the step's max_retries decides whether it runs again."
    )


async def test_executor_lost_is_raised_by_submit(
    remote: str, executor: Executor, tmp_path: Path
) -> None:
    with pytest.raises(ExecutorLost, match=r"^Step 'crash_always' attempt 1: the "):
        await executor.submit(_item(crash_always, str(tmp_path / "never")))


# -- concurrency ---------------------------------------------------------------------


async def test_fifty_concurrent_frames(executor: Executor) -> None:
    branches = {
        f"b{i}": Step.from_callable(make_adder(i), name=f"add{i}", placement=executor)
        for i in range(50)
    }
    result = await Flujo(Step.parallel("fan", branches)).run_async(100)
    assert result.success is True
    assert result.output == {f"b{i}": Priced(100 + i, 0.01, 1) for i in range(50)}
    assert (result.total_cost_usd, result.total_tokens) == (Decimal("0.50"), 50)
    stats = executor.statistics()  # type: ignore[attr-defined]
    assert (stats.submitted, stats.completed, stats.running) == (50, 50, 0)


# -- context -------------------------------------------------------------------------


async def test_context_mutations_come_back(executor: Executor) -> None:
    pipeline = Step.from_callable(noter, name="n1", placement=executor) >> Step.from_callable(
        noter, name="n2", placement=executor
    )
    result = await Flujo(pipeline, context_model=NotesContext).run_async("hi")
    ctx = result.final_pipeline_context
    assert result.output == "HI"
    assert (ctx.count, ctx.notes, ctx.scratchpad) == (2, ["hi", "HI"], {"last": "HI"})
    assert ctx.initial_prompt == "hi"


async def test_failed_attempt_mutations_do_not_come_back(executor: Executor) -> None:
    step = Step.from_callable(noter_then_fail, placement=executor, max_retries=1)
    result = await Flujo(step, context_model=NotesContext).run_async("x")
    ctx = result.final_pipeline_context
    assert result.success is False
    assert (ctx.count, ctx.notes) == (0, [])


async def test_only_changed_fields_are_sent_back(executor: Executor) -> None:
    ctx = NotesContext(initial_prompt="p", run_id="r", notes=["keep"])
    result = await executor.submit(_item(count_only, "x", context=ctx))
    assert result.error is None
    assert result.context_updates == {"count": 1}


# -- placement resolution and lifetime (no worker needed) -----------------------------------


async def test_string_placements_share_one_executor_per_run() -> None:
    assert resolve_executor("inline") is resolve_executor("inline")
    mine = InlineExecutor()
    assert resolve_executor(mine) is mine
    with pytest.raises(
        ValueError, match=r"^placement must be one of \('inline', 'process', 'ray'\)"
    ):
        resolve_executor(object())


def test_check_placement_names_the_step_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    check_placement("s", None)
    check_placement("s", "inline")
    check_placement("s", InlineExecutor())
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 's': placement must be one of \('inline', 'process', 'ray'\) or an executor "
        r"\(an object with async submit\(item\) and aclose\(\)\), got 42\.$",
    ):
        check_placement("s", 42)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 's' with placement='process' needs the 'process' extra, and "
        r"trio-parallel, cloudpickle are not installed\. Install it with: "
        r"pip install 'flujo-actors\[process\]'$",
    ):
        check_placement("s", "process")


def test_executors_name_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from flujo_actors.executors.process import ProcessExecutor
    from flujo_actors.executors.ray import RayExecutor

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"^ProcessExecutor needs the 'process' extra"):
        ProcessExecutor()
    with pytest.raises(
        ImportError,
        match=r"^RayExecutor needs the 'ray' extra, and ray, cloudpickle are not installed\. "
        r"Install it with: pip install 'flujo-actors\[ray\]'$",
    ):
        RayExecutor()


def test_importing_flujo_actors_imports_no_extra() -> None:
    code = (
        "import sys, flujo_actors, flujo_actors.executors, flujo_actors.executors.process, "
        "flujo_actors.executors.ray; "
        "print(sorted(m for m in ('trio_parallel', 'ray', 'cloudpickle') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


async def test_async_with_closes_the_pool_at_once() -> None:
    from flujo_actors.executors.process import ProcessExecutor

    async with ProcessExecutor(max_workers=1) as pool:
        result = await Flujo(Step.from_callable(my_pid), executor=pool).run_async(3)
        pid = result.output
        assert pid in {p.pid for p in multiprocessing.active_children()}
    assert pid not in {p.pid for p in multiprocessing.active_children()}
    result = await Flujo(Step.from_callable(priced_sync), executor=pool).run_async(4)
    assert result.output == Priced(8)  # reopened on demand
    await pool.aclose()


def test_process_executor_validates_its_arguments() -> None:
    from flujo_actors.executors.process import ProcessExecutor

    with pytest.raises(
        ValueError, match=r"^ProcessExecutor: max_workers must be an int >= 1, got 0\.$"
    ):
        ProcessExecutor(max_workers=0)
    with pytest.raises(
        ValueError,
        match=r"^ProcessExecutor: worker_type must be one of \('spawn', 'forkserver'\), got 'fork'\.$",
    ):
        ProcessExecutor(worker_type="fork")
