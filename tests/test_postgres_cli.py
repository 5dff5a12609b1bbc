"""``batch --journal postgresql://... --job NAME`` and ``status`` for a shared job, run as the
user runs them: subprocesses against the emulator and a real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from worldrouter_async import ImageRequest
from worldrouter_async.batch import JournalRow, PostgresJournal, State
from worldrouter_async.testing import Emulator

from .conftest import SessionFactory
from .test_cli import _cli, _cli_against, _write_prompts
from .test_postgres_batch import _leave_rows_to_a_dead_worker

pytestmark = pytest.mark.anyio

SECRET = "hunter2-s3cret"


def _with_password(url: str) -> str:
    """`url` with a password (the test server trusts local connections, so any works)."""
    return url.replace("postgres@", f"postgres:{SECRET}@")


async def test_two_workers_run_one_job_and_status_counts_it(
    postgres_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    """Two `batch` processes on one job (named after the input file by default) both exit 0
    and create each prompt once; `status` counts the job, and no password is ever printed."""
    prompts = tmp_path / "cats.jsonl"
    _write_prompts(prompts, 30)
    url = _with_password(postgres_url)
    command = ["batch", str(prompts), "--journal", url, "--out", str(tmp_path / "out")]
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def worker() -> None:
        results.append(await _cli_against(emulator, *command))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as task_group:
            for _ in range(2):
                task_group.start_soon(worker)
    for done in results:
        assert done.returncode == 0, done.stderr
        output = done.stdout.decode() + done.stderr.decode()
        assert "completed 30" in output
        assert SECRET not in output
    assert emulator.counters.create_requests == emulator.counters.creates == 30

    status = await _cli("status", "--journal", url, "--job", "cats")
    assert status.returncode == 0, status.stderr
    text = status.stdout.decode()
    assert "completed       30" in text
    assert "workers alive: 0" in text
    assert SECRET not in text
    record = json.loads((await _cli("status", "--journal", url, "--job", "cats", "--json")).stdout)
    assert (record["counts"], record["workers"]) == ({"completed": 30}, [])
    assert SECRET not in json.dumps(record)


async def test_status_shows_the_live_workers_and_the_rows_each_holds(postgres_url: str) -> None:
    """A worker that is alive, holding rows, is listed with the count it holds."""
    async with PostgresJournal(postgres_url, job="dogs") as worker:
        rows = [
            JournalRow(f"d{i}", i, ImageRequest(model="m", prompt="dog"), f"k{i}", State.PENDING)
            for i in range(3)
        ]
        await worker.add(rows)
        await worker.claim(["d0", "d1"])
        status = await _cli("status", "--journal", postgres_url, "--job", "dogs", "--json")
    record = json.loads(status.stdout)
    assert record["counts"] == {"pending": 3}
    assert [(w["id"], w["holds"]) for w in record["workers"]] == [(worker.worker_id, 2)]


async def test_a_worker_exits_0_when_only_ambiguous_rows_are_left(
    postgres_url: str, make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """A dead worker's maybe-sent create is reported ambiguous and not resent, and the
    worker exits 0 (nothing is left it could do); with --retry-ambiguous it is resent."""
    prompts = tmp_path / "job.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(3))
    )
    async with make_session() as session:
        await _leave_rows_to_a_dead_worker(postgres_url, session)
    command = ["batch", str(prompts), "--journal", postgres_url, "--out", str(tmp_path / "o")]
    done = await _cli_against(emulator, *command)
    assert done.returncode == 0, done.stderr
    assert "ambiguous 1" in done.stdout.decode()
    assert "--retry-ambiguous" in done.stderr.decode()
    assert emulator.counters.create_requests == 2
    again = await _cli_against(emulator, *command, "--retry-ambiguous")
    assert again.returncode == 0, again.stderr
    assert "completed 3" in again.stdout.decode()
    assert emulator.counters.create_requests == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--journal", "postgresql://u@h/db"], "needs --job NAME"),
        (["status"], "status needs a journal"),
    ],
)
async def test_status_mistakes_exit_2_with_one_line(args: list[str], message: str) -> None:
    """A shared journal without its job, or no journal at all, is a usage error."""
    done = await _cli(*args)
    assert done.returncode == 2
    assert message in done.stderr.decode()


async def test_status_of_a_job_the_database_does_not_hold_exits_2(postgres_url: str) -> None:
    """A job name nobody ran is refused, naming the job and how --job defaults."""
    async with PostgresJournal(postgres_url, job="real"):
        pass
    done = await _cli("status", "--journal", _with_password(postgres_url), "--job", "typo")
    assert done.returncode == 2
    assert "no job 'typo'" in done.stderr.decode()
    assert SECRET not in done.stderr.decode()
