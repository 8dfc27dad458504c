"""Property and stateful tests: restart intensity, backoff, and message conservation."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from flujo_actors.actors import (
    Actor,
    Backoff,
    ChildSpec,
    Restart,
    RestartRecord,
    Strategy,
    Supervisor,
)
from flujo_actors.errors import ActorCrashed, ActorStopped, RestartIntensityExceeded
from flujo_actors.policy.intensity import RestartIntensity, backoff_delay

if TYPE_CHECKING:
    from tests.task_tree import all_tasks  # mypy names test modules by path
else:
    from task_tree import all_tasks  # pytest puts tests/ on sys.path

# -- restart intensity against a model -------------------------------------------------


class IntensityMachine(RuleBasedStateMachine):
    """``RestartIntensity`` must agree with "count every restart of the last max_seconds"."""

    policy: RestartIntensity

    @initialize(
        max_restarts=st.integers(min_value=0, max_value=6),
        max_seconds=st.sampled_from([0.5, 1.0, 5.0])
        | st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
    )
    def setup(self, max_restarts: int, max_seconds: float) -> None:
        self.policy = RestartIntensity(max_restarts, max_seconds)
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.model: list[RestartRecord] = []
        self.now = 0.0

    @rule(
        dt=st.sampled_from([0.0, 0.25, 0.5, 1.0])
        | st.floats(min_value=0.0, max_value=20.0, allow_nan=False)
    )
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(child=st.sampled_from(["a", "b", "c"]), crashed=st.booleans())
    def restart(self, child: str, crashed: bool) -> None:
        record = RestartRecord(child=child, time=self.now, error="E: x" if crashed else None)
        allowed = self.policy.record(record)
        self.model.append(record)
        in_window = [r for r in self.model if self.now - r.time < self.max_seconds]
        assert allowed == (len(in_window) <= self.max_restarts)
        assert self.policy.window == tuple(in_window[-(self.max_restarts + 1) :])

    @precondition(lambda self: bool(self.model))
    @rule(back=st.floats(min_value=0.001, max_value=10.0))
    def clock_goes_backwards(self, back: float) -> None:
        last = self.model[-1].time
        earlier = last - back
        with pytest.raises(ValueError, match=r"^Restart times must not go backwards: got "):
            self.policy.record(RestartRecord(child="a", time=earlier))

    @invariant()
    def consistent(self) -> None:
        self.policy.check_invariants()
        assert self.policy.total == len(self.model)


TestIntensity = IntensityMachine.TestCase


def test_intensity_validation() -> None:
    with pytest.raises(ValueError, match=r"^max_restarts must be an int >= 0, got True\.$"):
        RestartIntensity(True, 1.0)
    with pytest.raises(ValueError, match=r"^max_seconds must be a finite number > 0, got inf\.$"):
        RestartIntensity(1, math.inf)


# -- backoff ---------------------------------------------------------------------------

durations = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    base=durations,
    extra=durations,
    factor=st.floats(min_value=1.0, max_value=100.0),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    unit=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_delay_stays_within_its_bounds(
    attempt: int, base: float, extra: float, factor: float, jitter: float, unit: float
) -> None:
    max_s = base + extra
    delay = backoff_delay(
        attempt, base_s=base, factor=factor, max_s=max_s, jitter=jitter, unit=unit
    )
    assert 0.0 <= delay <= max_s
    plain = backoff_delay(attempt, base_s=base, factor=factor, max_s=max_s, jitter=0.0, unit=unit)
    assert delay >= plain * (1.0 - jitter) * (1 - 1e-12)
    assert delay <= plain * (1.0 + jitter) * (1 + 1e-12)


@given(
    base=st.floats(min_value=0.001, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=4.0),
    cap=st.floats(min_value=0.0, max_value=100.0),
)
def test_backoff_without_jitter_grows_to_its_cap(base: float, factor: float, cap: float) -> None:
    backoff = Backoff(base_s=base, factor=factor, max_s=base + cap, jitter=0.0)
    delays = [backoff.delay_s(n, 0.5) for n in range(40)]
    assert delays[0] == base
    assert delays == sorted(delays)
    assert all(d == min(base + cap, base * factor**n) for n, d in enumerate(delays))


def test_backoff_validation() -> None:
    with pytest.raises(
        ValueError, match=r"^Backoff: base_s must be a finite number >= 0, got -1\.0\.$"
    ):
        Backoff(base_s=-1.0)
    with pytest.raises(
        ValueError, match=r"^Backoff: factor must be a finite number >= 1, got 0\.5\.$"
    ):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match=r"^Backoff: max_s \(1\.0\) must be >= base_s \(2\.0\)\.$"):
        Backoff(base_s=2.0, max_s=1.0)
    with pytest.raises(ValueError, match=r"^Backoff: jitter must be in \[0, 1\), got 1\.0\.$"):
        Backoff(jitter=1.0)
    seeded = Backoff(jitter=0.5, seed=3)
    assert seeded.make_rng().random() == seeded.make_rng().random()


# -- supervisors: no message is lost or handled twice -------------------------------------


class Job:
    """A told message: crashes its handler ``fails`` times, each try takes ``work_s``.

    ``tries`` counts handler calls (a try cut short by a sibling's restart included),
    ``crashes`` the tries that crashed the actor.
    """

    def __init__(self, number: int, fails: int, work_s: float) -> None:
        self.number = number
        self.fails = fails
        self.work_s = work_s
        self.tries = 0
        self.crashes = 0

    def __repr__(self) -> str:
        return f"Job({self.number}, fails={self.fails})"


class Worker(Actor):
    def __init__(self, handled: list[Job], life: list[str]) -> None:
        self.handled = handled
        self.life = life

    async def on_start(self) -> None:
        self.life.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.life.append(f"stop {self.name}")

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("asked to crash")
        assert isinstance(message, Job)
        message.tries += 1
        if message.work_s:
            await trio.sleep(message.work_s)
        if message.tries <= message.fails:
            message.crashes += 1
            raise RuntimeError(f"{message!r} failed")
        self.handled.append(message)
        return message.number


names = st.sampled_from(["a", "b", "c", "w"])  # w lives in the nested supervisor n
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("tell"),
            names,
            st.integers(min_value=0, max_value=4),
            st.sampled_from([0.0, 0.5]),
        ),
        st.tuples(st.just("ask_crash"), names),
        st.tuples(st.just("stop_ref"), names),
        st.tuples(st.just("stop_child"), names),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.25, 1.0, 6.0])),
        st.tuples(st.just("settle")),
    ),
    max_size=30,
)


def target(sup: Supervisor, name: str) -> Any:
    return sup.supervisor("n").ref("w") if name == "w" else sup.ref(name)


async def replay(
    script: list[tuple[Any, ...]],
    supervisor: Supervisor,
    told: list[Job],
    recipients: list[str],
    cancel_at: float,
) -> bool:
    """Run ``script`` against ``supervisor``, cancelled from outside at ``cancel_at``.

    Returns True if the supervisor gave up (intensity exceeded).
    """
    before = all_tasks()
    gave_up = False
    with trio.fail_after(100_000), trio.move_on_after(cancel_at):  # fail: no hang
        try:
            async with trio.open_nursery() as nursery:
                sup: Supervisor = await nursery.start(supervisor.run)
                for number, op in enumerate(script):
                    if op[0] == "tell":
                        job = Job(number, fails=op[2], work_s=op[3])
                        await target(sup, op[1]).tell(job)
                        told.append(job)  # after: a cancelled tell sent nothing
                        recipients.append(op[1])
                    elif op[0] == "ask_crash":
                        # Every ask gets an answer: never a timeout.
                        with pytest.raises((ActorCrashed, ActorStopped)):
                            await target(sup, op[1]).ask("crash", timeout_s=50_000)
                    elif op[0] == "stop_ref":
                        await target(sup, op[1]).stop()
                    elif op[0] == "stop_child":
                        if sup.statistics().state == "running":
                            await sup.stop_child("n" if op[1] == "w" else op[1])
                    elif op[0] == "sleep":
                        await trio.sleep(op[1])
                    else:
                        await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(30.0)  # let backoffs and redeliveries play out
                await sup.stop()
        except* RestartIntensityExceeded:
            gave_up = True
    assert all_tasks() == before
    return gave_up


@given(
    script=operations,
    strategy=st.sampled_from(list(Strategy)),
    restarts=st.tuples(*[st.sampled_from(list(Restart))] * 3),
    max_restarts=st.integers(min_value=0, max_value=10),
    backoff=st.booleans(),
    max_redeliveries=st.integers(min_value=0, max_value=3),
    per_child=st.tuples(*[st.none() | st.integers(min_value=0, max_value=3)] * 3),
    cancel_at=st.just(math.inf) | st.floats(min_value=0.0, max_value=40.0),
)
# Found by this test: w crashed on its tell just as the parent's shutdown stopped its
# supervisor; the message was dead-lettered as "stopped" instead of "crashed".
@example(
    script=[("ask_crash", "a"), ("tell", "w", 1, 0.0)],
    strategy=Strategy.ONE_FOR_ONE,
    restarts=(Restart.PERMANENT, Restart.PERMANENT, Restart.PERMANENT),
    max_restarts=0,
    backoff=False,
    max_redeliveries=0,
    per_child=(None, None, None),
    cancel_at=math.inf,
)
def test_every_told_message_is_handled_once_or_dead_lettered_once(
    script: list[tuple[Any, ...]],
    strategy: Strategy,
    restarts: tuple[Restart, Restart, Restart],
    max_restarts: int,
    backoff: bool,
    max_redeliveries: int,
    per_child: tuple[int | None, int | None, int | None],
    cancel_at: float,
) -> None:
    handled: list[Job] = []
    life: list[str] = []
    told: list[Job] = []
    recipients: list[str] = []

    def nested() -> Supervisor:  # w: the default, never redelivered
        return Supervisor([ChildSpec("w", Worker, handled, life)], max_restarts=1, name="n")

    limits = {
        name: max_redeliveries if own is None else own
        for name, own in zip("abc", per_child, strict=True)
    }
    limits["w"] = 0

    supervisor = Supervisor(
        [
            *(
                ChildSpec(name, Worker, handled, life, restart=restart, max_redeliveries=own)
                for name, restart, own in zip("abc", restarts, per_child, strict=True)
            ),
            ChildSpec("n", nested),
        ],
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=5.0,
        backoff=Backoff(base_s=0.5, max_s=2.0, jitter=0.2, seed=1) if backoff else None,
        max_redeliveries=max_redeliveries,
    )
    gave_up = trio.run(
        replay,
        script,
        supervisor,
        told,
        recipients,
        cancel_at,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )

    stats = supervisor.statistics()
    assert stats.state == ("failed" if gave_up else "stopped")
    assert {child.state for child in stats.children} == {"stopped"}
    if stats.children[-1].restarts or "start w" in life:
        assert supervisor.supervisor("n").statistics().state in {"stopped", "failed"}
    dead = [letter for letter in supervisor.dead_letters() if isinstance(letter.message, Job)]
    for job, recipient in zip(told, recipients, strict=True):
        limit = limits[recipient]
        times_handled = sum(1 for h in handled if h is job)
        letters = [letter for letter in dead if letter.message is job]
        assert times_handled + len(letters) == 1, (job, times_handled, letters)
        # One crash per message unless redelivery was asked for, and never more
        # than max_redeliveries + 1: a bad message cannot crash-loop its actor.
        assert job.crashes <= limit + 1, (job, limit)
        if letters:
            reason = letters[0].reason
            assert reason in {"stopped", "crashed", "poison"}
            if reason == "poison":
                assert limit > 0 and job.crashes == limit + 1, (job, limit)
            elif reason == "crashed":
                assert job.crashes >= 1
            if limit == 0 and job.crashes:
                assert reason == "crashed"  # dead at its first crash, never handed out again
        else:
            assert job.crashes <= limit
            # Tries interrupted by a sibling's restart are tried again.
            assert job.tries >= job.fails + 1
    for name in "abcw":
        assert life.count(f"start {name}") == life.count(f"stop {name}"), life
