"""The command line end to end, as a real subprocess against the emulator, kill -9 included."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from worldrouter_async import ImageRequest, Session
from worldrouter_async.batch import JournalRow, State, read_rows
from worldrouter_async.batch._journal import SqliteFile
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
    assert f"{path}: 20000 requests" in out
    assert "completed   19999" in out
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
    assert "done: 6 requests" in done.stdout.decode()
    status = await _cli("status", str(tmp_path / "out" / "journal.sqlite3"))
    assert status.returncode == 1
    assert "completed   5" in status.stdout.decode()
    assert "p2 (failed" in status.stdout.decode()
    _write_prompts(prompts, 6)  # fix line 3 but keep ids: p2 now differs from its journal row
    rerun = await _cli(*args, env=env)
    assert "p2 invalid" in rerun.stdout.decode()
    assert emulator.counters.creates == 6


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
    assert any("refused the API key (HTTP 401" in line for line in stderr)
    assert emulator.counters.create_requests <= 4 + 1  # --concurrency 4
    assert "done: 30 requests" in done.stdout.decode()
    assert "pending 30" in done.stdout.decode()
    status = await _cli("status", str(out / "journal.sqlite3"))
    assert "pending     30" in status.stdout.decode()


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
    assert f"{prompts}: line 2: not valid UTF-8" in done.stderr.decode()
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
        (["status", "."], "cannot read journal ."),
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
