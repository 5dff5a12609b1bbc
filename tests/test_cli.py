"""The command line end to end, as a real subprocess against the emulator, kill -9 included."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from anyio.abc import Process

from worldrouter_async import ImageRequest, Session
from worldrouter_async.batch import JournalRow, State, read_rows
from worldrouter_async.batch._jsonl import LineError, parse_line
from worldrouter_async.batch.journal import SqliteFile
from worldrouter_async.cli import main
from worldrouter_async.testing import Emulator
from worldrouter_async.testing._png import PNG_SIGNATURE

pytestmark = pytest.mark.anyio

FAST = ["--poll-initial", "0.005", "--poll-max", "0.02"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDROUTER_")}
    env.update(extra)
    return env


async def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(
        [sys.executable, "-m", "worldrouter_async", *args],
        env=env or _env(),
        check=False,
    )


async def _run(command: list[str], emulator: Emulator) -> subprocess.CompletedProcess[bytes]:
    """`command` with `emulator`'s API key in its environment; the exit code is not checked."""
    return await anyio.run_process(
        command, env=_env(WORLDROUTER_API_KEY=emulator.api_key), check=False
    )


async def _cli_against(emulator: Emulator, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI with `args`, pointed at `emulator`: its URL and key, and fast retries."""
    return await _run(
        [sys.executable, "-m", "worldrouter_async", *args, "--base-url", emulator.base_url, *FAST],
        emulator,
    )


def _write_prompts(path: Path, count: int, *, failing: int = -1) -> None:
    lines = [
        json.dumps({"id": f"p{i}", "prompt": f"{'[fail] ' if i == failing else ''}image {i}"})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")


async def test_generate_saves_images_and_prints_paths(emulator: Emulator, tmp_path: Path) -> None:
    """generate runs one task and prints the saved paths."""
    done = await _cli_against(
        emulator,
        "generate",
        "a star",
        "--n",
        "2",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.decode().split()]
    assert len(paths) == 2
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)


def test_status_reads_a_large_journal_in_flat_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status streams the rows twice (counts, then problems) instead of loading them all."""
    path = tmp_path / "journal.sqlite3"
    journal = SqliteFile(path)
    journal.add(
        JournalRow(
            key=f"r{i}",
            position=i,
            request=ImageRequest(model="gpt-image-2", prompt=f"a lighthouse at dusk, #{i}"),
            idempotency_key=f"key-{i}",
            state=State.COMPLETED,
        )
        for i in range(20_000)
    )
    journal.set("r7", state=State.FAILED, task_id="t7", error="the server gave no reason")
    journal.close()
    tracemalloc.start()
    try:
        code = main(["status", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert code == 1
    assert f"{path}: 20000 lines, 20000 requests" in out
    assert "completed       19999" in out
    assert "r7 (failed, task t7): the server gave no reason" in out
    assert peak < 4 * 1024 * 1024  # the 20,000 rows read at once peak at about 11 MiB


async def test_batch_exit_codes_and_status(emulator: Emulator, tmp_path: Path) -> None:
    """0 when all succeed, 1 when some fail; status lists the failure."""
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 6, failing=2)
    args = [
        "batch",
        str(prompts),
        "--out",
        str(tmp_path / "out"),
        "--model",
        "gpt-image-2",
        "--base-url",
        emulator.base_url,
        *FAST,
    ]
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    done = await _cli(*args, env=env)
    assert done.returncode == 1, done.stderr
    assert "p2 failed" in done.stdout.decode()
    assert "done: 6 lines" in done.stdout.decode()
    status = await _cli("status", str(tmp_path / "out" / "journal.sqlite3"))
    assert status.returncode == 1
    assert "completed       5" in status.stdout.decode()
    assert "p2 (failed" in status.stdout.decode()
    _write_prompts(prompts, 6)  # fix line 3 but keep ids: p2 now differs from its journal row
    rerun = await _cli(*args, env=env)
    assert 'line 3 invalid: request "p2" differs' in rerun.stdout.decode()
    assert emulator.counters.creates == 6


@pytest.mark.parametrize(("pace", "paced"), [([], False), (["--requests-per-second", "40"], True)])
async def test_requests_per_second_keeps_a_batch_under_the_rate_limit(
    tmp_path: Path, pace: list[str], paced: bool
) -> None:
    """--requests-per-second paces creates and polls below the limit: no 429 at all, where
    the same batch unpaced bursts into it."""
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 12)
    async with Emulator(rate_limit=80.0, burst=4) as emulator:
        done = await _cli_against(
            emulator, "batch", str(prompts), "--out", str(tmp_path / "out"), *pace
        )
        assert done.returncode == 0, done.stderr
        assert emulator.counters.creates == 12
        assert (emulator.counters.rate_limited == 0) is paced
    assert "done: 12 lines" in done.stdout.decode()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["batch", "missing.jsonl", "--out", "o"],
            {"WORLDROUTER_API_KEY": "k"},
            "cannot read missing.jsonl",
        ),
        (["generate", "x"], {}, "no API key: pass --api-key or set the WORLDROUTER_API_KEY"),
        (["generate", "x", "--size", "big"], {"WORLDROUTER_API_KEY": "k"}, "size must be"),
        (
            ["batch", "p.jsonl", "--out", "o", "--concurrency", "0"],
            {"WORLDROUTER_API_KEY": "k"},
            "--concurrency",
        ),
        (
            ["generate", "x", "--requests-per-second", "0"],
            {"WORLDROUTER_API_KEY": "k"},
            "--requests-per-second must be positive (got 0)",
        ),
        (["status", "nope.sqlite3"], {}, "no journal at nope.sqlite3"),
        (["frobnicate"], {}, "invalid choice"),
    ],
)
async def test_user_mistakes_exit_2_without_tracebacks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    """Usage errors are one plain line and exit code 2."""
    monkeypatch.chdir(tmp_path)
    done = await _cli(*args, env=_env(**env))
    assert done.returncode == 2
    assert message in done.stderr.decode()
    assert b"Traceback" not in done.stderr


async def test_demo_leaves_png_files(tmp_path: Path) -> None:
    """The README's first command: an in-process emulator and real PNGs on disk."""
    done = await _cli("demo", "--count", "6", "--out", str(tmp_path / "demo"), "--plain")
    assert done.returncode == 0, done.stderr
    images = sorted((tmp_path / "demo" / "images").glob("*.png"))
    assert len(images) == 6
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in images)


@asynccontextmanager
async def _emulator_process(*options: str) -> AsyncIterator[str]:
    """`worldrouter-async emulator --port 0 OPTIONS` as a subprocess; yields its base URL."""
    command = [sys.executable, "-m", "worldrouter_async", "emulator", "--port", "0", *options]
    async with await anyio.open_process(command, env=_env()) as process:
        assert process.stdout is not None
        first = (await process.stdout.receive()).decode().split()
        try:
            yield next(word for word in first if word.startswith("http"))
        finally:
            process.kill()


async def test_emulator_command_serves_the_api(tmp_path: Path) -> None:
    """`worldrouter-async emulator` prints its URL and answers a real session."""
    async with (
        _emulator_process("--time-scale", "0.001") as base_url,
        Session("test-key", base_url) as session,
    ):
        task = await session.tasks.create("gpt-image-2", "a star")
        assert (await session.tasks.retrieve(task.id)).id == task.id


async def _kill_when(process: Process, condition: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not condition():
            await anyio.sleep(0.002)
    process.kill()  # SIGKILL: no cleanup, no flush, like a crash
    await process.wait()


def _batch_command(emulator: Emulator, prompts: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "worldrouter_async",
        "batch",
        str(prompts),
        "--out",
        str(out),
        "--model",
        "gpt-image-2",
        "--concurrency",
        "4",
        "--plain",
        "--base-url",
        emulator.base_url,
        *FAST,
        *extra,
    ]


@pytest.mark.parametrize("ignore_idempotency", [False, True], ids=["dedup", "no-dedup"])
async def test_kill_9_and_resume_never_double_creates(
    emulator: Emulator, tmp_path: Path, ignore_idempotency: bool
) -> None:
    """Killed mid-create and mid-download, reruns pay once per prompt whatever the server does;
    --retry-ambiguous then settles the rest, with no loss when the server deduplicates."""
    count = 24
    emulator.time_scale = 0.03  # a gpt-image-2 task takes ~0.75 s
    emulator.ignore_idempotency = ignore_idempotency
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, count)
    out = tmp_path / "out"
    command = _batch_command(emulator, prompts, out)
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    # 1: a create lands on the server but its answer never comes; kill meanwhile. (A run's
    # first create goes alone, so the hang waits until that one has been answered.)
    async with await anyio.open_process(command, env=env) as first:
        with anyio.fail_after(30):
            while not emulator.counters.creates:
                await anyio.sleep(0.002)
        emulator.inject("hang_after_create", route="create")
        hung = emulator.counters.faults
        await _kill_when(
            first, lambda: hung["hang_after_create"] and emulator.counters.creates >= 6
        )
    # 2: kill again once some images are being downloaded.
    async with await anyio.open_process(command, env=env) as second:
        await _kill_when(second, lambda: emulator.counters.storage_requests >= 4)
    # 3: run to the end without --retry-ambiguous: rows whose create got no answer are
    # reported with the command that resends them, and never resent.
    final = await anyio.run_process(command, env=env, check=False)
    assert final.returncode == 1, final.stderr
    assert shlex.join(["worldrouter-async", *command[3:], "--retry-ambiguous"]) in (
        final.stderr.decode()
    )
    rows = read_rows(out / "journal.sqlite3")
    ambiguous = [r for r in rows if r.state == State.SUBMITTING]
    assert len(ambiguous) >= 1  # the hung create at least
    assert all(r.state == State.COMPLETED for r in rows if r not in ambiguous)
    assert emulator.counters.duplicate_creates == 0
    assert emulator.counters.creates <= count
    assert emulator.counters.creates >= count - len(ambiguous) + 1  # the hung one landed
    # 4: the user says the server deduplicates; the ambiguous rows are resent by key.
    retried = await anyio.run_process([*command, "--retry-ambiguous"], env=env, check=False)
    assert retried.returncode == 0, retried.stderr
    rows = read_rows(out / "journal.sqlite3")
    assert [r.state for r in rows] == [State.COMPLETED] * count
    assert all((out / f).read_bytes().startswith(PNG_SIGNATURE) for r in rows for f in r.files)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"p{i}-0.png" for i in range(count))
    if ignore_idempotency:  # the documented risk of the flag: the hung create paid twice
        assert emulator.counters.duplicate_creates >= 1
    else:  # nothing lost and nothing doubled: one server task per prompt, all distinct
        assert emulator.counters.duplicate_creates == 0
        assert emulator.counters.creates == count
        assert len({r.task_id for r in rows}) == count
        assert emulator.counters.idempotent_replays >= 1


# A shell that started this test run in the background leaves SIGINT ignored, and an ignored
# signal survives exec: restore the default so the CLI gets Ctrl-C as from a terminal.
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


async def _interrupt_mid_run(
    emulator: Emulator, command: list[str], signum: int
) -> tuple[int, str]:
    async with await anyio.open_process(
        [sys.executable, "-c", _DEFAULT_SIGINT, *command],
        env=_env(WORLDROUTER_API_KEY=emulator.api_key),
    ) as process:
        with anyio.fail_after(30):
            while emulator.counters.creates < 6:
                await anyio.sleep(0.002)
        process.send_signal(signum)
        code = await process.wait()
        assert process.stderr is not None
        stderr = (await process.stderr.receive()).decode()
    return code, stderr


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [
        (signal.SIGINT, 130, "interrupted; rerun the same command to resume"),
        (signal.SIGTERM, 143, "terminated; rerun the same command to resume"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
@pytest.mark.parametrize("ignore_idempotency", [False, True], ids=["dedup", "no-dedup"])
async def test_signal_stops_cleanly_and_the_rerun_finishes(
    emulator: Emulator,
    tmp_path: Path,
    signum: int,
    code: int,
    message: str,
    ignore_idempotency: bool,
) -> None:
    """SIGINT and SIGTERM mid-run stop with a plain message; creates in flight are journaled,
    so the rerun finishes every prompt without resending any, whatever the server does."""
    count = 16
    emulator.time_scale = 0.03
    emulator.ignore_idempotency = ignore_idempotency
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, count)
    out = tmp_path / "out"
    command = _batch_command(emulator, prompts, out)
    returncode, stderr = await _interrupt_mid_run(emulator, command, signum)
    assert returncode == code
    assert message in stderr
    assert "Traceback" not in stderr
    final = await _run(command, emulator)
    assert final.returncode == 0, final.stderr
    assert emulator.counters.creates == count
    assert emulator.counters.duplicate_creates == 0
    assert [r.state for r in read_rows(out / "journal.sqlite3")] == [State.COMPLETED] * count


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare to run the CLI as PID 1",
)
async def test_sigterm_is_honoured_as_pid_1(emulator: Emulator, tmp_path: Path) -> None:
    """As PID 1 of a PID namespace (a container's init), SIGTERM still stops the batch."""
    probe = await anyio.run_process(["unshare", "--pid", "--fork", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip("unshare --pid is not permitted here")
    emulator.time_scale = 0.03
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 16)
    command = ["unshare", "--pid", "--fork", *_batch_command(emulator, prompts, tmp_path / "o")]
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    async with await anyio.open_process(command, env=env) as process:
        with anyio.fail_after(30):
            while emulator.counters.creates < 6:
                await anyio.sleep(0.002)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGTERM)  # the CLI: PID 1 inside the namespace
        with anyio.fail_after(30):
            assert await process.wait() == 143
        assert process.stderr is not None
        stderr = (await process.stderr.receive()).decode()
    assert "terminated; rerun the same command to resume" in stderr


async def test_second_batch_on_a_journal_exits_2_naming_the_pid(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A second run on a journal in use (an overlapping cron job) exits 2 at once."""
    emulator.time_scale = 1.0  # the first run is still waiting for its tasks when killed
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 16)
    command = _batch_command(emulator, prompts, tmp_path / "out")
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    async with await anyio.open_process(command, env=env) as first:
        with anyio.fail_after(30):
            while emulator.counters.creates < 1:
                await anyio.sleep(0.002)
        second = await anyio.run_process(command, env=env, check=False)
        first.kill()
        await first.wait()
    assert second.returncode == 2
    journal = tmp_path / "out" / "journal.sqlite3"
    assert f"journal {journal} is in use by pid {first.pid}" in second.stderr.decode()
    assert b"Traceback" not in second.stderr


async def test_batch_refuses_an_empty_journal(emulator: Emulator, tmp_path: Path) -> None:
    """A 0-byte journal is an error with one line, not a new job that pays for everything."""
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "journal.sqlite3").touch()
    done = await _run(_batch_command(emulator, prompts, tmp_path / "out"), emulator)
    assert done.returncode == 1
    assert "is empty (0 bytes)" in done.stderr.decode()
    assert b"Traceback" not in done.stderr
    assert emulator.counters.create_requests == 0


async def test_batch_with_a_refused_key_stops_with_one_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A wrong key stops creates after the first 401; summary and status count the same."""
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 30)
    out = tmp_path / "out"
    done = await anyio.run_process(
        _batch_command(emulator, prompts, out),
        env=_env(WORLDROUTER_API_KEY="wrong-key"),
        check=False,
    )
    assert done.returncode == 1
    stderr = done.stderr.decode().splitlines()
    assert len([line for line in stderr if "stopped sending creates" in line]) == 1
    (stop,) = [line for line in stderr if "refused the API key" in line]
    assert stop.count("HTTP 401") == 1  # said once, not wrapped in itself
    assert emulator.counters.create_requests <= 4 + 1  # --concurrency 4
    assert "done: 30 lines" in done.stdout.decode()
    assert "pending 30" in done.stdout.decode()
    status = await _cli("status", str(out / "journal.sqlite3"))
    assert "pending         30" in status.stdout.decode()


async def test_batch_reports_a_non_utf8_line_and_runs_the_rest(
    emulator: Emulator, tmp_path: Path
) -> None:
    """One undecodable line is reported with its number; the others complete."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(
        b'{"id": "a", "prompt": "one"}\n{"prompt": "\xff"}\n{"id": "c", "prompt": "x"}\n'
    )
    done = await _run(_batch_command(emulator, prompts, tmp_path / "out"), emulator)
    assert done.returncode == 1
    assert "] line 2 invalid: not valid UTF-8" in done.stdout.decode()
    assert b"Traceback" not in done.stderr
    assert "completed 2" in done.stdout.decode()


async def test_emulator_command_can_ignore_idempotency_keys() -> None:
    """`emulator --ignore-idempotency` makes a resent create a second task."""
    async with (
        _emulator_process("--ignore-idempotency") as base_url,
        Session("test-key", base_url) as session,
    ):
        one = await session.tasks.create("gpt-image-2", "a star", idempotency_key="k1")
        two = await session.tasks.create("gpt-image-2", "a star", idempotency_key="k1")
    assert one.id != two.id


async def test_batch_out_that_is_a_file_is_one_line(emulator: Emulator, tmp_path: Path) -> None:
    """--out naming a file fails with one plain line and sends nothing."""
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 2)
    (tmp_path / "afile").write_text("x")
    done = await _run(_batch_command(emulator, prompts, tmp_path / "afile"), emulator)
    assert done.returncode == 2
    assert "--out" in done.stderr.decode()
    assert "is a file, not a directory" in done.stderr.decode()
    assert b"Traceback" not in done.stderr
    assert emulator.counters.create_requests == 0


async def test_deleting_out_mid_run_stops_with_one_line(emulator: Emulator, tmp_path: Path) -> None:
    """Removing --out (and the journal in it) mid-run stops the run; it never exits 0."""
    emulator.time_scale = 0.03
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 40)
    out = tmp_path / "out"
    command = _batch_command(emulator, prompts, out)
    async with await anyio.open_process(
        command, env=_env(WORLDROUTER_API_KEY=emulator.api_key)
    ) as process:
        with anyio.fail_after(30):
            while emulator.counters.creates < 2:
                await anyio.sleep(0.002)
        shutil.rmtree(out)
        with anyio.fail_after(30):
            code = await process.wait()
        assert process.stderr is not None
        stderr = (await process.stderr.receive()).decode()
    assert code == 1
    assert f"journal {out / 'journal.sqlite3'} was deleted" in stderr
    assert "Traceback" not in stderr


def _no_traceback(done: subprocess.CompletedProcess[bytes]) -> str:
    """The stderr of a run that must not have printed a traceback."""
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "x", "--out", "afile"], "--out afile is a file, not a directory"),
        (["generate", "x", "--out", "afile/sub"], "cannot write images to --out afile/sub"),
        (["generate", "x", "--out", "/proc/nope"], "cannot write images to --out /proc/nope"),
        (["generate", "x", "--out", "/sys"], "cannot write images to --out /sys"),
        (["wait", "imgtask_1", "--out", "afile"], "--out afile is a file"),
        (["batch", "p.jsonl", "--out", "afile"], "--out afile is a file, not a directory"),
        (["batch", "p.jsonl", "--out", "/proc/nope"], "cannot write images to --out /proc/nope"),
        (["demo", "--out", "afile"], "--out afile is a file, not a directory"),
        (["status", "p.jsonl"], "p.jsonl is not a batch journal"),
        (["status", "."], "no journal at journal.sqlite3"),
    ],
)
async def test_bad_paths_exit_2_with_one_line_and_create_nothing(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    """A file for --out, an unwritable or impossible directory, a non-journal: one line, 2."""
    if any(arg.startswith(("/proc", "/sys")) for arg in args) and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc and /sys")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    _write_prompts(tmp_path / "p.jsonl", 2)
    if args[0] in ("generate", "wait", "batch"):
        args = [*args, "--base-url", emulator.base_url, *FAST]
    done = await _cli(*args, env=_env(WORLDROUTER_API_KEY=emulator.api_key))
    stderr = _no_traceback(done)
    assert done.returncode == 2, stderr
    assert message in stderr
    assert len(stderr.splitlines()) == 1
    assert emulator.counters.creates == 0  # nothing was paid for


async def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path: Path) -> None:
    """--debug, as a global flag or after the command, adds the traceback to the one line."""
    journal = tmp_path / "p.jsonl"
    _write_prompts(journal, 1)
    for args in (["--debug", "status", str(journal)], ["status", str(journal), "--debug"]):
        done = await _cli(*args)
        assert done.returncode == 2
        stderr = done.stderr.decode()
        assert "Traceback" in stderr
        assert stderr.splitlines()[-1].startswith("worldrouter-async: error: ")


async def test_generate_that_fails_after_the_create_names_the_task_and_wait_fetches_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A timeout after the paid create prints the task ID and the wait command that saves it."""
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    connection = ["--base-url", emulator.base_url, *FAST]
    emulator.time_scale = 1000.0  # the task cannot finish within --timeout
    out = tmp_path / "images"
    done = await _cli(
        "generate", "a kite", "--out", str(out), "--timeout", "0.2", *connection, env=env
    )
    stderr = _no_traceback(done)
    assert done.returncode == 1, stderr
    (task_id,) = emulator.tasks
    assert f"fetch its images later with: worldrouter-async wait {task_id} --out {out}" in stderr
    assert f"task {task_id} did not finish within --timeout" in stderr
    assert "Session.track" not in stderr
    emulator.force_status(task_id, "completed")
    fetched = await _cli(
        "wait", task_id, "--out", str(out), "--timeout", "30", *connection, env=env
    )
    assert fetched.returncode == 0, fetched.stderr
    (path,) = (Path(line) for line in fetched.stdout.decode().split())
    assert path.parent == out
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert emulator.counters.creates == 1  # the image was fetched without paying again


async def test_generate_whose_download_fails_names_the_task(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A storage failure after the task completed still leaves the user its task ID."""
    emulator.inject("500", route="storage", count=20)  # outlasts the download retries
    done = await _cli_against(
        emulator,
        "generate",
        "a kite",
        "--out",
        str(tmp_path),
    )
    stderr = _no_traceback(done)
    assert done.returncode == 1, stderr
    (task_id,) = emulator.tasks
    assert f"worldrouter-async wait {task_id} --out {tmp_path}" in stderr
    assert "DownloadError" in stderr.splitlines()[-1]


async def test_wait_for_an_unknown_task_says_so_without_a_retry_hint(
    emulator: Emulator, tmp_path: Path
) -> None:
    """404 for the task ID: one line naming it, exit 1, and no advice to wait again."""
    done = await _cli_against(
        emulator,
        "wait",
        "imgtask_missing",
        "--out",
        str(tmp_path),
    )
    stderr = _no_traceback(done)
    assert done.returncode == 1
    assert stderr.splitlines() == [stderr.splitlines()[0]]
    assert "TaskNotFoundError: task imgtask_missing" in stderr


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["wait", "imgtask_1", "--base-url", "http://example.com/v1"], "pass --insecure"),
        (["generate", "x", "--base-url", "https://u:p@example.com/v1"], "with --api-key"),
        (["generate", "x", "--base-url", "ftp://example.com"], "--base-url must be"),
        (["batch", "p.jsonl", "--out", "o", "--timeout", "0"], "--timeout must be"),
    ],
)
async def test_configuration_errors_name_cli_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], flag: str
) -> None:
    """Session's Python argument names are reworded as the flags a CLI user types."""
    monkeypatch.chdir(tmp_path)
    _write_prompts(tmp_path / "p.jsonl", 1)
    done = await _cli(*args, env=_env(WORLDROUTER_API_KEY="k"))
    stderr = _no_traceback(done)
    assert done.returncode == 2
    assert flag in stderr
    for python_name in ("Session(", "api_key=", "allow_insecure", "base_url", "task_timeout"):
        assert python_name not in stderr


async def test_help_shows_every_default_and_batch_shares_generates() -> None:
    """Every option says its default; batch and generate default to the same model."""
    pages = {}
    for command in ("generate", "wait", "batch", "status", "emulator", "demo"):
        done = await _cli(command, "--help")
        assert done.returncode == 0
        pages[command] = " ".join(done.stdout.decode().split())  # unwrap argparse's lines
    assert "(default: None)" not in "".join(pages.values())
    for command in ("generate", "batch"):
        assert "image model (default: gpt-image-2)" in pages[command]
        assert "(default: 900.0)" in pages[command]
    assert "creates in flight at once (default: 16)" in pages["batch"]
    assert "address to listen on (default: 127.0.0.1)" in pages["emulator"]
    assert "seed of the random faults and durations (default: 0)" in pages["emulator"]
    assert "the journal of a batch run" in pages["status"]
    assert "TASK_ID" in pages["wait"]


async def test_importing_the_cli_leaves_the_emulator_unloaded() -> None:
    """Only `emulator` and `demo` need worldrouter_async.testing: every other command's
    start-up (the import of the CLI) neither loads it nor aiohttp's server."""
    code = (
        "import sys, worldrouter_async.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('worldrouter_async.testing', "
        "'aiohttp.web'))))"
    )
    done = await anyio.run_process([sys.executable, "-c", code], env=_env())
    assert done.stdout.decode().strip() == "[]"


async def test_batch_uses_the_default_model_and_names_jsonl_lines_in_warnings(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Lines without a model get gpt-image-2; an ignored parameter is warned at its line."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"id": "a", "prompt": "plain"})
        + "\n"
        + json.dumps({"id": "b", "prompt": "x", "model": "gemini-2.5-flash-image", "n": 2})
        + "\n"
    )
    done = await _cli_against(
        emulator,
        "batch",
        str(prompts),
        "--out",
        str(tmp_path / "out"),
        "--plain",
    )
    stderr = _no_traceback(done)
    assert done.returncode == 0, stderr
    assert stderr.splitlines() == [
        f"worldrouter-async: warning: {prompts}:2: gemini-2.5-flash-image ignores n; the task "
        "will run without it. Remove n from the request, or pick a model that honours it"
    ]
    models = sorted(task.model for task in emulator.tasks.values())
    assert models == ["gemini-2.5-flash-image", "gpt-image-2"]


async def test_generate_warns_in_one_plain_line(emulator: Emulator, tmp_path: Path) -> None:
    """A warning from the library is one line without a Python file location."""
    done = await _cli_against(
        emulator,
        "generate",
        "x",
        "--model",
        "gemini-2.5-flash-image",
        "--size",
        "1024x1024",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [
        "worldrouter-async: warning: gemini-2.5-flash-image ignores size; the task will run "
        "without it. Remove size from the request, or pick a model that honours it"
    ]


async def test_ctrl_c_after_generate_created_its_task_names_the_task(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Interrupting generate once it has paid exits 130 and says how to fetch the task."""
    emulator.time_scale = 1000.0  # the task stays in progress
    command = [sys.executable, "-m", "worldrouter_async", "generate", "a kite"]
    command += ["--out", str(tmp_path), "--base-url", emulator.base_url, *FAST]
    async with await anyio.open_process(
        [sys.executable, "-c", _DEFAULT_SIGINT, *command],
        env=_env(WORLDROUTER_API_KEY=emulator.api_key),
    ) as process:
        with anyio.fail_after(30):
            while emulator.counters.polls < 1:  # created and being tracked
                await anyio.sleep(0.002)
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 130
        assert process.stderr is not None
        stderr = b""
        async for chunk in process.stderr:
            stderr += chunk
    (task_id,) = emulator.tasks
    assert stderr.decode().splitlines() == [
        f"worldrouter-async: task {task_id} is not saved; fetch its images later with: "
        f"worldrouter-async wait {task_id} --out {tmp_path}",
        "worldrouter-async: interrupted",
    ]


def _mixed_prompts(path: Path) -> None:
    """31 lines as a spreadsheet export writes them (a BOM first): 28 requests, 3 bad lines.

    Line 4 is not JSON, line 8 has no prompt, line 11 repeats the id of line 3, and line 13
    has no id (so it is keyed by its line) and sets a size its Gemini model ignores.
    """
    lines = [json.dumps({"id": f"p{i}", "prompt": f"image {i}"}) for i in range(31)]
    lines[3] = "{not json"
    lines[7] = json.dumps({"id": "p7", "model": "gpt-image-2"})
    lines[10] = json.dumps({"id": "p2", "prompt": "a repeat"})
    lines[12] = json.dumps({"prompt": "no id", "model": "gemini-2.5-flash-image", "size": "64x64"})
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")


async def test_every_input_line_is_counted_once_in_counter_summary_and_status(
    emulator: Emulator, tmp_path: Path
) -> None:
    """31 lines end as 31 outcomes: the counter completes, the summary and status agree, and
    status still lists each invalid line with its number and reason after the run."""
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    _mixed_prompts(prompts)
    done = await _cli_against(emulator, "batch", str(prompts), "--out", str(out))
    stdout = done.stdout.decode()
    assert done.returncode == 1, done.stderr
    assert stdout.splitlines()[-2].startswith("[31/31] ")
    assert "done: 31 lines in " in stdout
    assert ": completed 28, invalid 3; tokens in " in stdout
    assert "] p0 completed (new)" in stdout  # the BOM did not spoil line 1
    status = await _cli("status", str(out))  # the --out directory names its journal
    lines = status.stdout.decode().splitlines()
    assert status.returncode == 1, status.stderr
    assert lines[0].startswith(f"{out / 'journal.sqlite3'}: 31 lines, 28 requests; tokens in ")
    assert lines[1:] == [
        "  completed       28",
        "  invalid         3",
        "  line 4 invalid: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
        '  line 8 invalid: no "prompt": every line needs one, such as '
        '{"prompt": "a lighthouse at dusk"}',
        '  line 11 invalid: id "p2" repeats an earlier request',
    ]
    assert emulator.counters.creates == 28


async def test_a_finished_job_says_so_in_one_line_and_keeps_its_cost(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Rerunning a finished job prints one line with the job's tokens; status shows them too."""
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    _write_prompts(prompts, 5)
    first = await _cli_against(emulator, "batch", str(prompts), "--out", str(out), "--json")
    cost = json.loads(first.stdout)["usage"]
    assert cost["total_tokens"] > 0
    again = await _cli_against(emulator, "batch", str(prompts), "--out", str(out))
    assert again.returncode == 0, again.stderr
    tokens = f"in {cost['input_tokens']}, out {cost['output_tokens']}, total {cost['total_tokens']}"
    assert again.stdout.decode().splitlines() == [
        "done: the job was already finished, nothing created: 5 lines, completed 5; "
        f"tokens {tokens}; journal {out / 'journal.sqlite3'}"
    ]
    status = await _cli("status", str(out / "journal.sqlite3"))
    assert f"5 lines, 5 requests; tokens {tokens}" in status.stdout.decode()
    assert emulator.counters.creates == 5


async def test_a_resumed_run_shows_this_runs_tokens_and_the_whole_jobs(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun after more lines were added counts the new tasks' tokens and the job's total."""
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    _write_prompts(prompts, 2)
    await _cli_against(emulator, "batch", str(prompts), "--out", str(out))
    _write_prompts(prompts, 3)
    again = await _cli_against(emulator, "batch", str(prompts), "--out", str(out), "--json")
    summary = json.loads(again.stdout)
    assert summary["sources"] == {"journal": 2, "new": 1}
    assert 0 < summary["usage"]["total_tokens"] < summary["job_usage"]["total_tokens"]
    assert "; whole job in " in again.stderr.decode()  # the human summary, beside the JSON


def _documented_schemas() -> dict[str, Any]:
    """The JSON Schemas docs/cli.md documents, each after a ``<!-- schema: NAME -->`` mark."""
    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- schema: ([a-z-]+) -->\n```json\n(.*?)\n```", text, re.DOTALL)
    return {name: json.loads(body) for name, body in found}


_JSON_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _schema_errors(value: object, schema: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """Where `value` breaks `schema` (the JSON Schema subset the docs use); [] when it fits."""
    if "$ref" in schema:
        return _schema_errors(value, schemas[schema["$ref"]], schemas)
    if "anyOf" in schema:
        tries = [_schema_errors(value, option, schemas) for option in schema["anyOf"]]
        return [] if [] in tries else [f"{value!r} fits none of {schema['anyOf']}"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{value!r} not in {schema['enum']}"]
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not any(_JSON_TYPES[name](value) for name in types):
        return [f"{value!r} is not {types}"]
    errors: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"missing {name!r}" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                errors += _schema_errors(item, properties[name], schemas)
            elif schema.get("additionalProperties") is False:
                errors.append(f"undocumented field {name!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _schema_errors(item, schema["additionalProperties"], schemas)
    if isinstance(value, list) and "items" in schema:
        for item in value:
            errors += _schema_errors(item, schema["items"], schemas)
    return errors


def test_the_schema_checker_refuses_what_the_schemas_forbid() -> None:
    """The checker the JSON test relies on finds missing, extra and mistyped fields."""
    schemas = _documented_schemas()
    usage = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    assert _schema_errors(usage, schemas["usage"], schemas) == []
    assert _schema_errors({**usage, "cost": 1}, schemas["usage"], schemas)
    assert _schema_errors({**usage, "total_tokens": "3"}, schemas["usage"], schemas)
    assert _schema_errors({"input_tokens": 1}, schemas["usage"], schemas)
    assert _schema_errors("done", schemas["kind"], schemas)


async def test_json_output_matches_the_documented_schemas(
    emulator: Emulator, tmp_path: Path
) -> None:
    """generate, wait, batch (summary and events), dry run and status print what docs/cli.md
    documents, with stdout holding nothing but JSON."""
    schemas = _documented_schemas()
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    _mixed_prompts(prompts)

    def check(stdout: bytes, name: str, *, last: str | None = None) -> list[dict[str, Any]]:
        """Each line of `stdout` as a `name` record (the last one as a `last` record)."""
        records = [json.loads(line) for line in stdout.decode().splitlines()]
        names = [name] * len(records) if last is None else [name] * (len(records) - 1) + [last]
        for record, schema in zip(records, names, strict=True):
            assert _schema_errors(record, schemas[schema], schemas) == [], record
        return records

    generated = await _cli_against(emulator, "generate", "a kite", "--out", str(tmp_path), "--json")
    (task,) = check(generated.stdout, "task")
    assert task["ok"]
    assert task["files"]
    assert task["usage"]["total_tokens"] > 0
    waited = await _cli_against(emulator, "wait", task["task_id"], "--out", str(tmp_path), "--json")
    assert check(waited.stdout, "task")[0]["task_id"] == task["task_id"]
    failed = await _cli_against(emulator, "generate", "[fail] x", "--out", str(tmp_path), "--json")
    assert failed.returncode == 1
    (failure,) = check(failed.stdout, "task")
    assert not failure["ok"]
    assert failure["task_id"] in emulator.tasks
    assert failure["error"]
    refused = await _cli_against(
        emulator, "generate", "x", "--out", str(tmp_path), "--json", "--api-key", "wrong"
    )
    assert refused.returncode == 1
    (refusal,) = check(refused.stdout, "task")
    assert refusal["task_id"] is None
    assert "HTTP 401" in refusal["error"]
    dry = await _cli("batch", str(prompts), "--dry-run", "--json")
    (checked,) = check(dry.stdout, "dry-run")
    assert [line["line"] for line in checked["invalid_lines"]] == [4, 8, 11]
    events = await _cli_against(emulator, "batch", str(prompts), "--out", str(out), "--json-events")
    records = check(events.stdout, "batch-outcome", last="batch-summary")
    assert len(records) == 32
    assert records[-1]["lines"] == 31
    assert sorted(r["line"] for r in records if r.get("kind") == "invalid") == [4, 8, 11]
    rerun = await _cli_against(emulator, "batch", str(prompts), "--out", str(out), "--json")
    (summary,) = check(rerun.stdout, "batch-summary")
    assert summary["counts"] == {"completed": 28, "invalid": 3}
    status = await _cli("status", str(out), "--json")
    (journal,) = check(status.stdout, "status")
    assert journal["lines"] == 31
    assert journal["counts"] == summary["counts"]
    assert journal["usage"] == summary["job_usage"]


async def test_dry_run_sends_nothing_and_reports_what_a_run_would_send(
    emulator: Emulator, tmp_path: Path
) -> None:
    """--dry-run reads the whole file, counts requests per model, names ignored parameters
    and invalid lines, and sends nothing (no --out, no journal, no API request)."""
    prompts = tmp_path / "p.jsonl"
    _mixed_prompts(prompts)
    done = await _cli_against(emulator, "batch", str(prompts), "--dry-run")
    assert done.returncode == 1, done.stderr  # invalid lines: the file is not ready to run
    assert done.stdout.decode().splitlines() == [
        f"{prompts}: 31 lines; a run would send 28 requests and refuse 3 invalid lines "
        "(dry run: nothing sent)",
        "  gemini-2.5-flash-image       1",
        "  gpt-image-2                  27",
        "  line 13: gemini-2.5-flash-image ignores size (the task runs without it)",
        "  line 4 invalid: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
        '  line 8 invalid: no "prompt": every line needs one, such as '
        '{"prompt": "a lighthouse at dusk"}',
        '  line 11 invalid: id "p2" repeats line 3',
    ]
    assert emulator.counters.connections == emulator.counters.create_requests == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]
    _write_prompts(prompts, 3)
    assert (await _cli("batch", str(prompts), "--dry-run")).returncode == 0


async def test_batch_without_out_says_which_flag_is_missing(tmp_path: Path) -> None:
    """A run needs --out; the message names it and the dry run that does not."""
    prompts = tmp_path / "p.jsonl"
    _write_prompts(prompts, 1)
    done = await _cli("batch", str(prompts))
    assert done.returncode == 2
    assert "batch needs --out DIR" in _no_traceback(done)


async def _run_on_a_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `command` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    controller, terminal = os.openpty()
    try:
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env
        )
    finally:
        os.close(terminal)
    output = bytearray()
    async with process:
        with anyio.fail_after(60):
            while True:
                await anyio.wait_readable(controller)
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            code = await process.wait()
    os.close(controller)
    return code, output.decode(errors="replace")


async def test_generate_and_wait_show_the_task_and_its_status_on_a_terminal(
    emulator: Emulator, tmp_path: Path
) -> None:
    """On a terminal the task ID appears once it exists, then a live status line; piped,
    nothing but the paths."""
    emulator.time_scale = 0.1  # long enough for a few refreshes of the line
    env = _env(WORLDROUTER_API_KEY=emulator.api_key, TERM="xterm", COLUMNS="200")
    command = [sys.executable, "-m", "worldrouter_async", "generate", "a kite"]
    command += ["--out", str(tmp_path), "--base-url", emulator.base_url, *FAST]
    code, output = await _run_on_a_terminal(command, env)
    assert code == 0, output
    (task_id,) = emulator.tasks
    assert f"task {task_id} created; if this stops, fetch it with: worldrouter-async wait " in (
        output
    )
    assert re.search(rf"task {task_id}: (queued|in_progress) · \d+s", output), output
    assert f"{task_id}-0.png" in output
    command = [sys.executable, "-m", "worldrouter_async", "wait", task_id]
    command += ["--out", str(tmp_path), "--base-url", emulator.base_url, *FAST]
    code, output = await _run_on_a_terminal(command, env)
    assert code == 0, output
    assert f"waiting for task {task_id}" in output
    piped = await _cli_against(emulator, "wait", task_id, "--out", str(tmp_path))
    assert piped.stderr == b""  # a script reading the paths gets nothing extra
    assert piped.stdout.decode().split() == [str(tmp_path / f"{task_id}-0.png")]


_INTERRUPT_AT_IMPORT = """
import importlib.abc, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)

class InterruptAtImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "aiohttp":
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, while the SDK is still importing
        return None

sys.meta_path.insert(0, InterruptAtImport())
"""


@pytest.mark.parametrize("command", ["generate", "batch"])
async def test_ctrl_c_while_starting_is_one_line(tmp_path: Path, command: str) -> None:
    """SIGINT during start-up (the SDK's imports) prints one line and no traceback."""
    (tmp_path / "sitecustomize.py").write_text(_INTERRUPT_AT_IMPORT)
    args = ["x", "--api-key", "k"] if command == "generate" else ["p.jsonl", "--out", "o"]
    done = await anyio.run_process(
        [sys.executable, "-m", "worldrouter_async", command, *args],
        env=_env(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path])),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode in (130, -signal.SIGINT)
    assert done.stderr.decode().splitlines() == ["worldrouter-async: interrupted"]


def test_rerunning_a_finished_demo_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second demo run reports the finished job once, not a line per request."""
    out = tmp_path / "demo"
    assert main(["demo", "--count", "3", "--out", str(out), "--plain"]) == 0
    capsys.readouterr()
    assert main(["demo", "--count", "3", "--out", str(out), "--plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("emulator at ")
    assert lines[1].startswith("done: the job was already finished, nothing created: 3 lines")
    images = out / "images"
    assert lines[2:] == [f"images in {images}; look at them: {images / 'index.html'}"]


async def test_an_edited_line_counts_once_in_status(emulator: Emulator, tmp_path: Path) -> None:
    """A line whose request changed since the journal recorded it counts as invalid, in
    place of its old row, so status still adds up to the file's lines."""
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    _write_prompts(prompts, 3)
    await _cli_against(emulator, "batch", str(prompts), "--out", str(out))
    _write_prompts(prompts, 3, failing=1)  # p1 now asks for another prompt
    rerun = await _cli_against(emulator, "batch", str(prompts), "--out", str(out), "--json")
    assert json.loads(rerun.stdout)["counts"] == {"completed": 2, "invalid": 1}
    status = await _cli("status", str(out), "--json")
    record = json.loads(status.stdout)
    assert record["counts"] == {"completed": 2, "invalid": 1}
    assert [line["id"] for line in record["invalid_lines"]] == ["p1"]


def test_status_names_no_task_where_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request refused before it had a task is listed without a 'task None', and
    journaled reasons name CLI flags."""
    path = tmp_path / "journal.sqlite3"
    journal = SqliteFile(path)
    request = ImageRequest(model="gpt-image-2", prompt="a kite")
    row = JournalRow(key="k", position=0, request=request, idempotency_key="i", state=State.FAILED)
    journal.add([row, attrs.evolve(row, key="s", position=1, state=State.SUBMITTING)])
    journal.set("k", error="the server refused the request (HTTP 400)")
    journal.set("s", error="Resend it with retry_ambiguous_creates=True only if ...")
    journal.close()
    assert main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "  k (failed): the server refused the request (HTTP 400)" in out
    assert "  s (ambiguous): Resend it with --retry-ambiguous only if ..." in out


def test_status_names_a_create_its_killed_run_never_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row left ``submitting`` with no error (its run was killed mid-create) is listed by
    key, with why it is ambiguous, for people and in --json."""
    path = tmp_path / "journal.sqlite3"
    journal = SqliteFile(path)
    request = ImageRequest(model="gpt-image-2", prompt="a kite")
    journal.add(
        [
            JournalRow(
                key="cut", position=0, request=request, idempotency_key="i", state=State.SUBMITTING
            )
        ]
    )
    journal.close()
    assert main(["status", str(path)]) == 1
    assert "  cut (ambiguous): its create was sent but no answer was recorded" in (
        capsys.readouterr().out
    )
    assert main(["status", str(path), "--json"]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert problem["id"] == "cut"
    assert "--retry-ambiguous" in problem["error"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"prompt": "a kite", "sise": "64x64"},
            'line 1: unknown field "sise"; a line may hold background, extra, id, model, ',
        ),
        (
            {"prompt": "a kite", "sise": "64x64"},
            '. Put other API parameters in an "extra" object, such as {"extra": {"sise": ...}}',
        ),
        (
            {"id": "a", "model": "gpt-image-2"},
            'line 1: no "prompt": every line needs one, such as {"prompt": "a lighthouse at dusk"}',
        ),
    ],
)
def test_jsonl_problems_are_told_in_json_terms(line: dict[str, Any], message: str) -> None:
    """A bad line's message speaks the JSON the user wrote, not Python (no extra={...})."""
    error = parse_line(json.dumps(line), line=1, defaults={"model": "gpt-image-2"})
    assert isinstance(error, LineError)
    assert message in str(error)
    assert "={" not in str(error)
    assert "{'" not in str(error)
