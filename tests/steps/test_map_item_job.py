"""A map item's job is a Job made by Job's own __init__, plus its index."""

from __future__ import annotations

from flujo_actors.run.core import Job
from flujo_actors.run.map import _ItemJob


def _finish(job: Job) -> None:
    pass


def test_an_item_job_has_no_init_of_its_own() -> None:
    # One initializer for every job: an item's fields cannot drift from Job's.
    assert "__init__" not in vars(_ItemJob)


def test_an_item_job_starts_like_a_job_made_with_the_same_arguments() -> None:
    ctx, path, start = object(), ("m", "m[3]"), object()
    for position in (None, ("m", 3)):
        item = _ItemJob(ctx, path, None, None, _finish, position, start)
        item.index = 3
        job = Job(ctx, path, on_finish=_finish, position=position, start=start)
        for name in Job.__slots__:
            assert getattr(item, name) == getattr(job, name), name
        assert item.start is start
        assert item.position == (path if position is None else position)
        assert item.index == 3
        assert item.history is not job.history  # its own list


def test_a_job_without_a_start_has_none() -> None:
    assert Job(None).start is None
