"""A random script against a DynamicSupervisor, checked against a model.

Starts, stops, crashes (on purpose and by an ask), chosen exits, tells and
asks, in any order: every told message is handled or dead-lettered exactly
once, restart counts are what OTP would count (one per crash of a live
child, none for exits or stops), children that stop for good are forgotten,
and the final stop runs in reverse start order.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors.actors import Actor, ChildSpec, DynamicSupervisor, Restart
from flujo_actors.errors import ActorCrashed, ActorStopped, MaxChildrenExceeded
from flujo_actors.testing import crash

MAX_CHILDREN = 4


class Tell:
    def __init__(self, number: int, crash: bool = False) -> None:
        self.number = number
        self.crash = crash

    def __repr__(self) -> str:
        return f"Tell({self.number})"


class Worker(Actor):
    def __init__(self, handled: list[Tell], life: list[str]) -> None:
        self.handled = handled
        self.life = life

    async def on_stop(self) -> None:
        self.life.append(self.name)

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash")
        if message == "exit":
            self.exit()
        if isinstance(message, Tell):
            if message.crash:
                raise RuntimeError(f"crash on {message!r}")
            self.handled.append(message)
        return message


ops = st.lists(
    st.one_of(
        st.just(("start", 0)),
        st.tuples(
            st.sampled_from(["stop", "crash", "ask_crash", "tell_crash", "exit", "tell", "ask"]),
            st.integers(min_value=0, max_value=MAX_CHILDREN + 1),
        ),
    ),
    max_size=40,
)


@given(script=ops)
def test_a_random_script_keeps_every_message_and_counts_restarts_like_otp(
    script: list[tuple[str, int]],
) -> None:
    async def main() -> None:
        handled: list[Tell] = []
        life: list[str] = []
        dyn = DynamicSupervisor(
            ChildSpec("w", Worker, handled, life, restart=Restart.TRANSIENT),
            max_children=MAX_CHILDREN,
            max_restarts=1000,
        )
        started: list[str] = []  # every child ever started, in order
        alive: dict[str, int] = {}  # name -> restarts (the model)
        refs: dict[str, Any] = {}
        told: list[Tell] = []
        crashed_live: set[int] = set()  # crashing tells sent to a live child
        async with trio.open_nursery() as nursery:
            await nursery.start(dyn.run)
            for op, index in script:
                name = started[index % len(started)] if started else None
                if op == "start":
                    if len(alive) >= MAX_CHILDREN:
                        try:
                            await dyn.start_child()
                        except MaxChildrenExceeded:
                            continue
                        raise AssertionError("max_children was not enforced")
                    ref = await dyn.start_child()
                    started.append(ref.name)
                    refs[ref.name] = ref
                    alive[ref.name] = 0
                elif name is None:
                    continue
                elif op in ("tell", "tell_crash"):
                    message = Tell(len(told), crash=op == "tell_crash")
                    told.append(message)
                    await refs[name].tell(message)
                    if message.crash and name in alive:
                        crashed_live.add(message.number)
                        alive[name] += 1  # one crash, one restart; the tell is dead-lettered
                elif op == "ask":
                    if name in alive:
                        assert await refs[name].ask("ping") == "ping"
                    else:
                        try:
                            await refs[name].ask("ping")
                        except ActorStopped:
                            pass
                        else:
                            raise AssertionError("a stopped child answered")
                elif name not in alive:
                    continue
                elif op == "stop":
                    await dyn.stop_child(name)
                    del alive[name]
                elif op == "crash":
                    crash(refs[name])
                    alive[name] += 1
                elif op == "ask_crash":
                    try:
                        await refs[name].ask("crash")
                    except ActorCrashed:
                        alive[name] += 1
                elif op == "exit":
                    await refs[name].tell("exit")
                    await trio.testing.wait_all_tasks_blocked()
                    del alive[name]  # transient: a normal exit is for good
                await trio.testing.wait_all_tasks_blocked()
                assert {c.name: c.restarts for c in dyn.which_children()} == alive
                assert all(c.state == "running" for c in dyn.which_children())
            live_order = [n for n in started if n in alive]
            before = len(life)
            await dyn.stop()
        assert life[before:] == list(reversed(live_order))
        dead = [d.message for d in dyn.dead_letters() if isinstance(d.message, Tell)]
        assert sorted(m.number for m in handled + dead) == [m.number for m in told]
        for letter in dyn.dead_letters():
            if isinstance(letter.message, Tell):
                crashed = letter.message.crash and letter.message.number in crashed_live
                assert letter.reason == ("crashed" if crashed else "stopped"), letter

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
