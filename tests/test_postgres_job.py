"""The output of a PostgreSQL job is claimed for the job: its workers share it, another job
or a job that lost records is refused before anything is sent, over a real PostgreSQL server,
the emulator, and a local directory or a real S3 API (moto)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import anyio
import psycopg
import pytest

from worldrouter_async import Session
from worldrouter_async._download import partial_writer, writer_tag
from worldrouter_async.batch import (
    BatchRunner,
    JournalLostError,
    OutcomeKind,
    OutputClaimedError,
    PostgresJournal,
)
from worldrouter_async.testing import Emulator

from .conftest import SessionFactory, batch_items
from .s3 import Bucket

pytestmark = pytest.mark.anyio

SECRET = "pg-secret-never-in-a-claim"


@pytest.fixture(params=["directory", "bucket"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An output: a local directory, or a prefix of a fresh bucket on moto."""
    if request.param == "directory":
        return str(tmp_path / "out")
    bucket: Bucket = request.getfixturevalue("s3_bucket")
    return bucket.url("job")


def _read_claim(out: str, request: pytest.FixtureRequest) -> dict[str, object]:
    if out.startswith("s3://"):
        bucket: Bucket = request.getfixturevalue("s3_bucket")
        text = bucket.get("job/.worldrouter-job") or b"{}"
    else:
        text = (Path(out) / ".worldrouter-job").read_bytes()
    claim: dict[str, object] = json.loads(text)
    return claim


async def _run(
    session: Session, url: str, out: str, count: int, *, job: str = "job", new: bool = False
) -> set[str]:
    async with BatchRunner(session, url, job=job, out_dir=out, new_journal=new) as runner:
        return {o.kind async for o in runner.run(batch_items(count))}


async def _admin(url: str, statement: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(statement)


async def _job_id(url: str, job: str) -> str:
    async with PostgresJournal(url, job=job) as journal:
        return journal.job_id


async def test_workers_of_one_job_share_its_claimed_output(
    postgres_url: str,
    make_session: SessionFactory,
    emulator: Emulator,
    out: str,
    request: pytest.FixtureRequest,
) -> None:
    """Two workers of one job accept the same claim, which names the job by its UUID and
    carries its whole mark (all workers' rows and sends), never a password."""
    url = postgres_url.replace("postgres@", f"postgres:{SECRET}@", 1)  # the server trusts it
    assert SECRET in url

    async def worker() -> None:
        async with make_session() as session:
            assert await _run(session, url, out, 12) == {OutcomeKind.COMPLETED}

    with anyio.fail_after(60):
        async with anyio.create_task_group() as task_group:
            for _ in range(2):
                task_group.start_soon(worker)
    claim = _read_claim(out, request)
    assert claim["journal_id"] == await _job_id(postgres_url, "job")
    assert (claim["rows"], claim["sends"]) == (12, 12)
    assert claim["journal"] == f"{PostgresJournal(url, job='job').database} --job job"
    assert SECRET not in json.dumps(claim)
    assert emulator.counters.creates == 12


async def test_a_second_job_on_a_claimed_output_is_refused(
    postgres_url: str, session: Session, emulator: Emulator, out: str
) -> None:
    """Another job (in the same database or any other) cannot write into a job's output,
    even with new_journal: the message names the owning job."""
    await _run(session, postgres_url, out, 3, job="cats")
    for new in (False, True):
        with pytest.raises(OutputClaimedError, match="--job cats"):
            await _run(session, postgres_url, out, 3, job="dogs", new=new)
    assert emulator.counters.creates == 3


async def test_a_job_made_again_after_its_tables_were_dropped_is_refused(
    postgres_url: str, session: Session, emulator: Emulator, out: str
) -> None:
    """A job whose database was lost (tables dropped, made again) would create every
    request again: refused, unless new_journal says to pay again."""
    await _run(session, postgres_url, out, 3)
    await _admin(
        postgres_url,
        "DROP TABLE worldrouter_invalid_lines, worldrouter_requests, worldrouter_workers,"
        " worldrouter_jobs, worldrouter_meta",
    )
    with pytest.raises(JournalLostError, match="new_journal=True"):
        await _run(session, postgres_url, out, 3)
    assert emulator.counters.creates == 3
    assert await _run(session, postgres_url, out, 3, new=True) == {OutcomeKind.COMPLETED}
    assert emulator.counters.creates == 6


async def test_a_job_below_its_claims_mark_is_refused(
    postgres_url: str, session: Session, emulator: Emulator, out: str
) -> None:
    """A job holding fewer rows than its output's claim recorded (an older backup of the
    database put back) is refused before it pays again for what it forgot."""
    await _run(session, postgres_url, out, 4)
    await _admin(postgres_url, "DELETE FROM worldrouter_requests WHERE key IN ('r2', 'r3')")
    with pytest.raises(JournalLostError, match="lost records: it holds 2 requests"):
        await _run(session, postgres_url, out, 4)
    assert emulator.counters.creates == 4
    assert await _run(session, postgres_url, out, 4, new=True) == {OutcomeKind.COMPLETED}
    assert emulator.counters.creates == 6


async def test_a_shared_run_removes_only_the_partial_files_of_dead_workers(
    postgres_url: str, make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """A worker joining a job deletes the hidden partial files its dead workers left in the
    output, and keeps those of live workers (which may be writing them) and unnamed ones."""
    out = tmp_path / "out"
    out.mkdir()
    alive = writer_tag(socket.gethostname(), os.getpid())  # the other worker below, and us
    dead = writer_tag("gone-pod.example", 4242)
    partials = {
        "dead": out / f".r0-0.png.{dead}.0123456789ab.part",
        "alive": out / f".r1-0.png.{alive}.0123456789ab.part",
        "unnamed": out / ".r2-0.png.0123456789ab.part",  # a writer of an older version
    }
    for partial in partials.values():
        partial.write_bytes(b"half an image")
    async with PostgresJournal(postgres_url, job="job"), make_session() as session:
        assert await _run(session, postgres_url, str(out), 3) == {OutcomeKind.COMPLETED}
    assert not partials["dead"].exists()
    assert partials["alive"].exists()
    assert partials["unnamed"].exists()
    assert sorted(p.name for p in out.glob("r*.png")) == ["r0-0.png", "r1-0.png", "r2-0.png"]


def test_a_partial_file_names_its_writer() -> None:
    """The name of a partial file carries its writer's host and pid (dots in the host
    made safe), and a name without one has no writer."""
    tag = writer_tag("node-1.example.com", 17)
    assert tag == "node-1_example_com-17"
    assert partial_writer(f".r0-0.png.{tag}.0123456789ab.part") == tag
    assert partial_writer(".r0-0.png.0123456789ab.part") is None
