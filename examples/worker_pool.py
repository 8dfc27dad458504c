"""A worker pool under a supervisor, fed through bounded mailboxes.

A producer hands ``jobs`` jobs round-robin to ``workers`` workers whose
mailboxes hold only a few jobs: ``tell_nowait`` raises ``MailboxFull`` when a
worker is backed up, and the producer then waits with ``await ref.tell(...)``
(backpressure: it never runs ahead of the pool). Some jobs are bad: they crash
their worker, which the supervisor restarts once with its mailbox intact; the
bad job itself lands in the dead letters (reason ``"crashed"``), never
silently lost. At the end every
job is accounted for, done or dead-lettered, exactly once. Run it:
``python examples/worker_pool.py [jobs] [workers]``.
"""

from __future__ import annotations

import sys

import trio
import trio.lowlevel

from flujo_actors import Actor, ChildSpec, MailboxFull, Supervisor

MAILBOX_SIZE = 4


class Job:
    def __init__(self, number: int, bad: bool) -> None:
        self.number = number
        self.bad = bad

    def __repr__(self) -> str:
        return f"Job({self.number}{', bad' if self.bad else ''})"


class Worker(Actor):
    """Does one job at a time; a bad job crashes it."""

    def __init__(self, outcomes: trio.MemorySendChannel[tuple[str, int]]) -> None:
        self.outcomes = outcomes

    async def handle(self, job: Job) -> None:
        await trio.lowlevel.checkpoint()  # the work
        if job.bad:
            raise ValueError(f"bad job {job.number}")
        self.outcomes.send_nowait(("done", job.number))


async def main(jobs: int = 2000, workers: int = 4, bad_every: int = 97) -> dict[str, int]:
    """Run the pool; return how many jobs were done, dead-lettered and waited for."""
    outcome_send, outcomes = trio.open_memory_channel[tuple[str, int]](jobs)
    supervisor = Supervisor(
        [
            ChildSpec(f"worker-{n}", Worker, outcome_send, mailbox_size=MAILBOX_SIZE)
            for n in range(workers)
        ],
        max_restarts=jobs,  # bad jobs are expected here: never give up because of them
        max_seconds=60.0,
        name="pool",
    )
    waited = 0
    async with trio.open_nursery() as nursery:
        sup = await nursery.start(supervisor.run)
        letters = sup.subscribe_dead_letters()

        async def forward_dead_jobs() -> None:
            # A dead job is an outcome too: nothing is lost, nothing is counted twice.
            async with letters:
                async for letter in letters:
                    if isinstance(letter.message, Job):
                        outcome_send.send_nowait(("dead", letter.message.number))

        nursery.start_soon(forward_dead_jobs)
        refs = [sup.lookup(f"worker-{n}") for n in range(workers)]
        for number in range(jobs):
            job = Job(number, bad=number % bad_every == bad_every - 1)
            ref = refs[number % workers]
            try:
                ref.tell_nowait(job)
            except MailboxFull:
                waited += 1
                await ref.tell(job)  # backpressure: wait for room
        done: set[int] = set()
        dead: list[int] = []
        for _ in range(jobs):  # every job ends up done or dead-lettered, exactly once
            kind, number = await outcomes.receive()
            if kind == "done":
                done.add(number)
            else:
                dead.append(number)
        restarts = sup.statistics().restarts
        print(sup.tree())
        await sup.stop()
        nursery.cancel_scope.cancel()
    bad = {n for n in range(jobs) if n % bad_every == bad_every - 1}
    assert sorted(dead) == sorted(bad), (dead, bad)
    assert done == set(range(jobs)) - bad
    assert restarts == len(bad)  # one bad job, one crash, one restart
    return {
        "jobs": jobs,
        "done": len(done),
        "dead_lettered": len(dead),
        "waited_for_room": waited,
        "restarts": restarts,
    }


if __name__ == "__main__":
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    summary = trio.run(main, jobs, workers)
    print(
        f"{summary['done']} of {summary['jobs']} jobs done, {summary['dead_lettered']} bad jobs "
        f"dead-lettered, {summary['restarts']} restarts; the producer waited for room "
        f"{summary['waited_for_room']} times."
    )
