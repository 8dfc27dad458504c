"""`python -m flujo_actors runs ...` through its real entry points, over real SQLite stores."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from flujo_actors import Flujo, SQLiteBackend
from flujo_actors.cli import main
from flujo_actors.cli.runs import parse_age

if TYPE_CHECKING:
    from pathlib import Path

    from tests.cli.cli_support import cli as _cli  # mypy names test modules by path
    from tests.cli.cli_support import effects as _effects
else:
    from cli_support import cli as _cli  # pytest puts tests/cli on sys.path
    from cli_support import effects as _effects


def _run_in_child(
    env: dict[str, str], store: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    code = (
        "import cli_pipes\n"
        "from flujo_actors import Flujo\n"
        f"r = Flujo(cli_pipes.pipeline, state_backend={str(store)!r})\n"
        "import trio\n"
        "print(trio.run(r.run_async, 1).run_id)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
    )


def _runs(store: Path, n_ok: int = 0, n_failed: int = 0) -> list[str]:
    cli_pipes = importlib.import_module("cli_pipes")

    ids = []
    for i in range(n_ok + n_failed):
        if i >= n_ok:
            os.environ["CLI_FAIL"] = "1"
        try:
            ids.append(Flujo(cli_pipes.pipeline, state_backend=str(store)).run(i).run_id)
        finally:
            os.environ.pop("CLI_FAIL", None)
    return ids


def test_list_shows_runs_newest_first_and_filters(env: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    ok1, ok2, bad = _runs(store, n_ok=2, n_failed=1)
    done = _cli(env, "runs", "--backend", str(store), "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "RUN",
        "ID",
        "STATUS",
        "PIPELINE",
        "STEPS",
        "COST",
        "USD",
        "TOKENS",
        "UPDATED",
    ]
    assert [line.split()[0] for line in lines[1:]] == [bad, ok2, ok1]
    assert lines[1].split()[1:5] == ["failed", "pipeline", "2", "0"]
    assert lines[2].split()[1:5] == ["completed", "pipeline", "3", "0"]

    failed = json.loads(
        _cli(env, "runs", "--backend", str(store), "list", "--status", "failed", "--json").stdout
    )
    assert [(r["run_id"], r["status"], r["steps"]) for r in failed] == [(bad, "failed", 2)]
    assert set(failed[0]) == {
        "run_id",
        "status",
        "pipeline",
        "steps",
        "total_cost_usd",
        "total_tokens",
        "updated_at",
    }
    assert main(["runs", "--backend", str(store), "list", "--pipeline", "other", "--json"]) == 0


def test_list_age_filters_and_limit(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    _runs(store, n_ok=3)
    args = ["runs", "--backend", str(store), "list", "--json"]
    capsys.readouterr()
    assert main([*args, "--older-than", "1h"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main([*args, "--newer-than", "1h", "--limit", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_show_prints_the_step_tree_and_the_stored_json(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_pipes = importlib.import_module("cli_pipes")

    store = tmp_path / "runs.db"
    run_id = Flujo(cli_pipes.fanned, state_backend=str(store)).run(5).run_id
    done = _cli(env, "runs", "--backend", str(store), "show", run_id)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == f"run {run_id}: completed, pipeline pipeline"
    assert out[1] == "total cost 0 USD, 0 tokens"
    assert out[2].split() == ["STEP", "STATUS", "ATTEMPTS", "COST", "USD", "TOKENS", "LATENCY"]
    # The parallel step's branches, and their steps, are indented under it.
    tree = [(line[: len(line) - len(line.lstrip())], *line.split()[:5]) for line in out[3:]]
    assert tree == [
        ("", "first", "ok", "1", "0", "0"),
        ("", "fan", "ok", "1", "0", "0"),
        ("  ", "l", "ok", "1", "0", "0"),
        ("    ", "left", "ok", "1", "0", "0"),
        ("  ", "r", "ok", "1", "0", "0"),
        ("    ", "right", "ok", "1", "0", "0"),
    ]
    assert all(line.endswith(" ms") for line in out[3:])
    assert main(["runs", "--backend", str(store), "show", run_id, "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["run_id"] == run_id and stored["status"] == "completed"
    assert len(stored["step_history"]) == 2


def test_resume_continues_a_killed_run_without_redoing_its_completed_step(
    env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "runs.db"
    killed = _run_in_child(env, store, CLI_KILL="second")
    assert killed.returncode == -9, killed.stderr
    [run_id] = _stored_ids(store)
    assert _effects(env) == ["first"]
    listed = _cli(env, "runs", "--backend", str(store), "list")
    assert listed.stdout.splitlines()[1].split()[:2] == [run_id, "running"]

    done = _cli(
        env,
        "runs",
        "--backend",
        str(store),
        "resume",
        run_id,
        "--pipeline",
        "cli_pipes:runner",
        "--json",
        script=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["run_id"], result["status"], result["output"]) == (run_id, "completed", 23)
    assert _effects(env) == ["first", "second", "third"]  # first ran once


def _stored_ids(store: Path) -> list[str]:
    import trio

    async def ids() -> list[str]:
        async with SQLiteBackend(store) as backend:
            return await backend.list_runs()

    return trio.run(ids)


def test_resume_of_a_failed_run_exits_1_with_its_stored_result(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    [bad] = _runs(store, n_failed=1)
    capsys.readouterr()
    assert (
        main(["runs", "--backend", str(store), "resume", bad, "--pipeline", "cli_pipes:pipeline"])
        == 1
    )
    assert capsys.readouterr().out.splitlines()[0] == f"run {bad}: failed"


def test_delete_and_prune(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    ok, bad = _runs(store, n_ok=1, n_failed=1)
    base = ["runs", "--backend", str(store)]
    assert main([*base, "delete", ok]) == 0
    assert capsys.readouterr().out == f"deleted {ok}\n"
    assert main([*base, "delete", ok]) == 2
    assert capsys.readouterr().err == (
        f"flujo-actors: error: run {ok!r} is not in the store (`runs list` lists the runs).\n"
    )
    assert main([*base, "prune", "--older-than", "1h"]) == 0
    assert capsys.readouterr().out == "0 run(s) pruned\n"
    assert main([*base, "prune", "--status", "failed"]) == 0
    assert capsys.readouterr().out == f"pruned {bad}\n1 run(s) pruned\n"
    assert _stored_ids(store) == []
    assert main([*base, "prune"]) == 2
    assert capsys.readouterr().err.startswith(
        "flujo-actors: error: prune: pass --older-than=SECONDS and/or status=STATUS"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["list", "--older-than", "soon"],
            "--older-than must be an age such as 3600, 90s, 15m, 2h or 7d, got 'soon'.",
        ),
        (["list", "--status", "sleeping"], "--status: list_runs: status must be None or one of "),
        (["list", "--limit", "0"], "--limit must be a number >= 1, got 0."),
        (["resume", "r", "--pipeline", "nocolon"], "run 'r' is not in the store"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    store = tmp_path / "runs.db"
    _runs(store, n_ok=1)
    assert main(["runs", "--backend", str(store), *args]) == 2
    assert capsys.readouterr().err.startswith(f"flujo-actors: error: {message}")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nocolon", "--pipeline must be module:attribute, got 'nocolon'."),
        ("no_such_module:x", "--pipeline 'no_such_module:x': cannot import 'no_such_module'"),
        ("cli_pipes:missing", "--pipeline 'cli_pipes:missing': cli_pipes has no 'missing'."),
        (
            "cli_pipes:not_a_pipeline",
            "--pipeline 'cli_pipes:not_a_pipeline' is a int; it must name a Flujo runner, a "
            "Pipeline or a Step.",
        ),
    ],
)
def test_a_bad_pipeline_target_exits_2(
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    message: str,
) -> None:
    store = tmp_path / "runs.db"
    [run_id] = _runs(store, n_ok=1)
    assert main(["runs", "--backend", str(store), "resume", run_id, "--pipeline", target]) == 2
    assert capsys.readouterr().err.startswith(f"flujo-actors: error: {message}")


def test_backend_may_follow_the_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.db"
    [run_id] = _runs(store, n_ok=1)
    assert main(["runs", "list", "--backend", str(store), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert main(["runs", "--backend", str(store), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == after
    assert [row["run_id"] for row in after] == [run_id]
    assert main(["runs", "show", run_id, "--backend", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == run_id


def test_a_missing_backend_option_exits_2_with_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["runs", "list", "--json"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--backend STORE is required" in err
    assert "flujo-actors runs --backend runs.db list" in err


def test_a_missing_store_is_an_error_and_is_not_created(
    tmp_path: Path, env: dict[str, str]
) -> None:
    store = tmp_path / "nope.db"
    done = _cli(env, "runs", "--backend", str(store), "list")
    assert done.returncode == 2
    assert done.stderr == (
        f"flujo-actors: error: --backend {str(store)!r}: no state store there (no such file). "
        "Pass the SQLite file a runner was given as state_backend=.\n"
    )
    assert not store.exists()


def test_age_parsing() -> None:
    assert [parse_age(t, "--x") for t in ("90", "90s", "1.5m", "2h", "7d")] == [
        90.0,
        90.0,
        90.0,
        7200.0,
        604800.0,
    ]


def test_on_a_terminal_the_tables_are_drawn_with_rich(
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flujo_actors.cli import render

    store = tmp_path / "runs.db"
    [run_id] = _runs(store, n_ok=1)
    monkeypatch.setattr(render, "use_rich", lambda: True)
    capsys.readouterr()
    assert main(["runs", "--backend", str(store), "list"]) == 0
    out = capsys.readouterr().out
    assert "┃ RUN ID" in out and run_id[:8] in out and "completed" in out


def test_fork_starts_a_new_run_after_the_reused_steps(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    [run_id] = _runs(store, n_ok=1)
    assert _effects(env) == ["first", "second", "third"]
    done = _cli(
        env,
        "runs",
        "--backend",
        str(store),
        "fork",
        run_id,
        "--pipeline",
        "cli_pipes:pipeline",
        "--at",
        "third",
        "--run-id",
        "forked",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["run_id"], result["status"], result["output"]) == ("forked", "completed", 13)
    assert _effects(env) == ["first", "second", "third", "third"]
    assert sorted(_stored_ids(store)) == sorted([run_id, "forked"])
    base = ["runs", "--backend", str(store), "fork", run_id, "--pipeline", "cli_pipes:pipeline"]
    assert main([*base, "--at", "9"]) == 2
    assert capsys.readouterr().err == (
        "flujo-actors: error: Flujo.fork_async: at=9 is not a top-level step index of pipeline "
        "'pipeline', which has steps 0..2.\n"
    )
    assert main([*base, "--at", "1", "--context", "[1]"]) == 2
    assert capsys.readouterr().err == (
        "flujo-actors: error: --context must be a JSON object of field -> value, got '[1]'.\n"
    )


def test_a_paused_run_shows_its_question_and_resumes_with_input(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_pipes = importlib.import_module("cli_pipes")
    store = tmp_path / "runs.db"
    paused = Flujo(cli_pipes.approval, state_backend=str(store)).run(1)
    assert paused.status == "paused"
    base = ["runs", "--backend", str(store)]
    capsys.readouterr()
    assert main([*base, "show", paused.run_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"run {paused.run_id}: paused, pipeline pipeline"
    assert out[-1].startswith("waiting for input at approve: Ship it? (input schema: {")
    assert main([*base, "show", paused.run_id, "--json"]) == 0
    [pending] = json.loads(capsys.readouterr().out)["pending"]
    assert (pending["key"], pending["message"]) == ("approve", "Ship it?")
    assert pending["input_schema"]["required"] == ["ok"]

    resume = [*base, "resume", paused.run_id, "--pipeline", "cli_pipes:approval"]
    assert main([*resume, "--input", '{"ok": "maybe"}']) == 2
    assert "flujo-actors: error: " in capsys.readouterr().err
    assert main([*resume, "--input", "{bad"]) == 2
    assert capsys.readouterr().err.startswith("flujo-actors: error: --input must be JSON")
    assert main([*resume]) == 3  # still paused: no input given
    assert capsys.readouterr().out.splitlines()[-1].startswith("waiting for input at approve")
    done = _cli(env, *resume, "--input", '{"ok": true}', "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "shipped"
    assert _effects(env) == ["first", "ship"]
