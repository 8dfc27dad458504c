"""Mailbox backpressure flood: ``ActorRef.tell`` of N messages through a 16-slot mailbox."""

from __future__ import annotations

from functools import partial

from flujo_actors.bench import Scenario, Workload, baselines
from flujo_actors.bench.workloads import tell_flood

__all__ = ["SCENARIOS"]

MAILBOX_SIZE = 16


#: Tell ``size`` messages to one actor with a small mailbox; time until all are handled.
flood = partial(tell_flood, mailbox_size=MAILBOX_SIZE)


def _channel(size: int) -> Workload:
    return baselines.channel_flood(size, buffer=MAILBOX_SIZE)


SCENARIOS = [
    Scenario(
        name="mailbox.flood",
        description=f"N ActorRef.tell calls into one actor with mailbox_size={MAILBOX_SIZE} (the sender waits when it is full).",
        measure=flood,
        baseline=_channel,
        baseline_label=f"N sends through a trio memory channel with a {MAILBOX_SIZE}-slot buffer to one consumer task",
        unit="msg/s",
        sizes=(100_000,),
        quick_sizes=(20_000,),
    ),
]
