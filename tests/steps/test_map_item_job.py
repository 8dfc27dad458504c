"""A map item's job sets every field a Job has (it skips Job.__init__ on the hot path)."""

from __future__ import annotations

from flujo_actors.run.core import Job
from flujo_actors.run.map import _ItemJob


def _finish(job: Job) -> None:
    pass


def test_an_item_job_starts_like_a_job_made_with_the_same_arguments() -> None:
    ctx, path, start = object(), ("m", "m[3]"), object()
    for position in (None, ("m", 3)):
        item = _ItemJob(ctx, path, _finish, position, 3, start)
        job = Job(ctx, path, None, None, _finish, position)
        job.start = start
        for name in Job.__slots__:
            assert getattr(item, name) == getattr(job, name), name
        assert item.index == 3
        assert item.history is not job.history  # its own list
