"""The actor test kit: Probe, crash, crash_storm (flujo_actors.testing)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from flujo_actors.actors import ChildRestarted, ChildSpec, Strategy, Supervisor
from flujo_actors.errors import ActorCrashed, RestartIntensityExceeded
from flujo_actors.testing import CrashedOnPurpose, CrashStorm, Probe, crash, crash_storm


async def test_expect_message_returns_the_next_message_and_explains_a_mismatch(
    autojump_clock: trio.abc.Clock,
) -> None:
    probe = Probe(reply=lambda m: m * 2)
    async with trio.open_nursery() as nursery:
        ref = await probe.start(nursery)
        assert await ref.ask(21) == 42
        await ref.tell(1)
        assert await probe.expect_message(lambda m: m == 21) == 21
        assert await probe.expect_message() == 1

        def is_even(m: int) -> bool:
            return m % 2 == 0

        await ref.tell(3)
        with pytest.raises(
            AssertionError,
            match=r"^Probe 'probe': the next message 3 does not match is_even\.$",
        ):
            await probe.expect_message(is_even)
        begin = trio.current_time()
        with pytest.raises(
            AssertionError,
            match=r"^Probe 'probe': no message within 30\.0 s \(received so far: \[21, 1, 3\]\)\.$",
        ):
            await probe.expect_message(timeout_s=30.0)
        assert trio.current_time() - begin == 30.0
        await probe.expect_no_message(within_s=60.0)
        nursery.start_soon(ref.tell, "late")
        with pytest.raises(
            AssertionError,
            match=r"^Probe 'probe': expected no message within 5\.0 s, got 'late'\.$",
        ):
            await probe.expect_no_message(within_s=5.0)
        await ref.stop()


async def test_a_supervised_probe_keeps_its_record_across_restarts() -> None:
    probe = Probe()
    sup = Supervisor([ChildSpec("p", probe.actor)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref = sup.ref("p")
        await ref.tell("before")
        await probe.expect_message(lambda m: m == "before")
        crash(ref)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("after")
        assert await probe.expect_message() == "after"
        assert probe.received == ["before", "after"]
        assert ref.statistics().restarts == 1
        assert ref.statistics().last_error == "CrashedOnPurpose: p crashed on purpose"
        await sup.stop()
    with pytest.raises(
        RuntimeError,
        match=r"^Probe 'probe' was not started with probe.start\(nursery\); under a "
        r"supervisor, use sup.ref\(<child name>\)\.$",
    ):
        probe.ref  # noqa: B018


async def test_a_crash_on_purpose_answers_the_ask_being_handled() -> None:
    probe = Probe(reply=lambda m: trio.sleep_forever)
    sup = Supervisor([ChildSpec("p", probe.actor)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref = sup.ref("p")
        crash(ref, ValueError("custom"))
        await trio.testing.wait_all_tasks_blocked()
        assert ref.statistics().last_error == "ValueError: custom"
        await sup.stop()
        with pytest.raises(RuntimeError, match=r"^Actor 'p' is stopped, not running"):
            crash(ref)


async def test_crash_storm_counts_restarts_like_otp_and_ends_in_giving_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    a, b = Probe("a"), Probe("b")
    inner = Probe("w")
    sup = Supervisor(
        [
            ChildSpec("a", a.actor),
            ChildSpec("b", b.actor),
            ChildSpec("pool", lambda: Supervisor([ChildSpec("w", inner.actor)], name="pool")),
        ],
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=3,
        max_seconds=10.0,
        name="root",
    )
    reports: list[CrashStorm] = []
    failures: list[RestartIntensityExceeded] = []

    async def supervise(*, task_status: trio.TaskStatus[Supervisor]) -> None:
        try:
            await sup.run(task_status=task_status)
        except RestartIntensityExceeded as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise)
        # 3 restarts in 10 s are allowed: a at 0 s, b at 1 s, a at 2 s; pool/w is
        # restarted by its own supervisor (not counted by root).
        reports.append(await crash_storm(sup, ["a", (1.0, "b"), (1.0, "a"), "pool/w"]))
        assert [e.child for e in sup.events() if isinstance(e, ChildRestarted)] == [
            "a",
            "b",
            "a",
        ]
        assert sup.supervisor("pool").ref("w").statistics().restarts == 1
        # After 20 s the window is empty again: three more fit, the fourth breaks it.
        reports.append(await crash_storm(sup, [(20.0, "b"), "a", "b", "a", "b"]))
    assert reports[0] == CrashStorm(crashed=("a", "b", "a", "pool/w"), skipped=())
    assert reports[1].crashed == ("b", "a", "b", "a")
    assert reports[1].skipped == (
        (
            "b",
            "lookup('b') in supervisor 'root': child 'b' of supervisor 'root' has stopped for "
            "good; restart_child('b') brings it back.",
        ),
    )
    assert [str(exc) for exc in failures] == [
        "Supervisor 'root' gave up: 4 restarts within 10.0 s exceed max_restarts=3 (last: "
        "child 'a' crashed: CrashedOnPurpose: a crashed on purpose); all children were stopped."
    ]


def test_probe_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^Probe: name must be a non-empty string, got ''\.$"):
        Probe("")
    with pytest.raises(TypeError, match=r"^Probe 'p': reply must be callable or None, got 3\.$"):
        Probe("p", reply=3)  # type: ignore[arg-type]
    assert issubclass(CrashedOnPurpose, Exception)
    assert ActorCrashed is not None
