"""The durability property, with real processes: SIGKILL anywhere in a tree, resume, same result.

Hypothesis draws pipeline trees (nested loops, parallel steps, conditionals,
nested pipelines) and kill points. Each run happens in a subprocess on a real
SQLite file and is SIGKILLed by its k-th agent call (before or after the
call's side effect), then resumed in a fresh process, possibly killed again,
until it finishes. Every agent appends its idempotency key (one per step
position) to a side-effect log before returning. Checked after each example:

* a step whose checkpoint was committed before a kill never runs again;
* a step that ran again was in flight (ran but not committed) at a kill,
  and ran at most once more per such kill;
* every step position of an uninterrupted run ran, and the final output and
  context equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING, Any

# Imported by file name: the workers import it the same way (mypy names it tests.*).
import durable_kill_worker as worker  # type: ignore[import-not-found]
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flujo_actors.policy.idempotency import idempotency_key

if TYPE_CHECKING:
    from pathlib import Path

EXAMPLES = 18
KILLS_PER_EXAMPLE = 3  # at least 50 kills in total
KILLS = {"n": 0}

pytestmark = pytest.mark.slow


def trees() -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.just({"t": "leaf"})

    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.lists(children, min_size=1, max_size=3).map(lambda c: {"t": "seq", "c": c}),
            st.tuples(st.lists(children, min_size=1, max_size=2), st.integers(1, 3)).map(
                lambda t: {"t": "loop", "c": t[0], "n": t[1]}
            ),
            st.lists(children, min_size=2, max_size=3).map(lambda c: {"t": "par", "c": c}),
            st.tuples(children, children).map(lambda t: {"t": "cond", "c": list(t)}),
            children.map(lambda c: {"t": "nested", "c": [c]}),
        )

    return st.lists(st.recursive(leaf, extend, max_leaves=6), min_size=1, max_size=3).map(
        lambda c: {"t": "seq", "c": c}
    )


# Each run is a new process forked from this one before it runs anything of the
# pipeline (no run, no open database: the test process only reads the file
# between runs, with its own short-lived connection). An interpreter start and
# the imports would cost seconds per process on a busy 2-core box; a fork does
# not. trio resets its thread cache in a forked child.
_PROCESSES = multiprocessing.get_context("fork")


def spawn(out: Path, *args: str) -> int:
    """Run the worker in a new process; its exit code (-9: SIGKILLed)."""
    proc = _PROCESSES.Process(target=worker.child, args=(list(args), str(out)))
    proc.start()
    proc.join(120)
    if proc.exitcode is None:  # a hang is a failure, not a wait forever
        proc.kill()
        proc.join()
        raise AssertionError(f"worker {args!r} did not finish within 120 s")
    return proc.exitcode


def clean_run(spec: dict[str, Any], effects: Path) -> dict[str, Any]:
    flujo = worker.runner(spec, None, str(effects), 0, "before")
    result = trio.run(lambda: flujo.run_async(1, run_id=worker.RUN_ID))
    summary: dict[str, Any] = worker.summary(result)
    return summary


def log(effects: Path) -> list[str]:
    if not effects.exists():
        return []
    return [line.split()[0] for line in effects.read_text().splitlines()]


def committed(db: Path) -> set[str]:
    """Idempotency keys of the positions the store holds as completed."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT position FROM positions WHERE run_id = ?", (worker.RUN_ID,))
        keys = {idempotency_key(worker.RUN_ID, tuple(json.loads(p))) for (p,) in rows}
        steps = conn.execute("SELECT json FROM steps WHERE run_id = ?", (worker.RUN_ID,))
        for (row,) in steps:
            # A completed top-level step: its own position (its children's are rows above).
            keys.add(idempotency_key(worker.RUN_ID, (json.loads(row)["value"]["name"],)))
    finally:
        conn.close()
    return keys


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    spec=trees(),
    kills=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(["before", "after"])),
        min_size=KILLS_PER_EXAMPLE,
        max_size=KILLS_PER_EXAMPLE,
    ),
)
def test_sigkill_anywhere_then_resume_redoes_only_unfinished_work(
    tmp_path_factory: pytest.TempPathFactory,
    spec: dict[str, Any],
    kills: list[tuple[float, str]],
) -> None:
    d = tmp_path_factory.mktemp("kill")
    clean_effects = d / "clean.txt"
    expected = clean_run(spec, clean_effects)
    positions = set(log(clean_effects))
    assert len(positions) == len(log(clean_effects))  # one key per position

    db, effects, spec_path = d / "runs.db", d / "effects.txt", d / "spec.json"
    spec_path.write_text(json.dumps(spec))
    done: set[str] = set()
    in_flight: Counter[str] = Counter()
    mode = "run"
    for fraction, when in kills:
        remaining = len(positions - done)
        if remaining == 0:
            break
        # The process runs every position not committed yet at least once: the kill fires.
        kill_at = 1 + int(fraction * remaining)
        before = len(log(effects))
        code = spawn(
            d / "out.json", mode, str(db), str(effects), str(spec_path), str(kill_at), when
        )
        assert code == -9, f"the worker was not killed (exit code {code})"
        KILLS["n"] += 1
        ran = log(effects)[before:]
        now = committed(db)
        assert not (set(ran) & done), "a step committed before the kill ran again"
        in_flight.update(set(ran) - now)
        done = now & positions
        mode = "resume"
    before = len(log(effects))
    out = d / "final.json"
    code = spawn(out, mode, str(db), str(effects), str(spec_path), "0", "before")
    assert code == 0, f"the resumed worker failed (exit code {code})"
    final = json.loads(out.read_text())
    assert not (set(log(effects)[before:]) & done), "a committed step ran again"

    counts = Counter(log(effects))
    assert set(counts) == positions  # every position ran, no other
    for key, n in counts.items():
        assert n <= 1 + in_flight[key], f"{key} ran {n} times, in flight at {in_flight[key]} kills"
    assert final == expected


def test_at_least_fifty_kills_happened() -> None:
    # Runs after the property test in file order; alone it only checks the arithmetic.
    if KILLS["n"] == 0:
        assert EXAMPLES * KILLS_PER_EXAMPLE >= 50
    else:
        assert KILLS["n"] >= 50
