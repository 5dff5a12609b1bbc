"""Many workers, one job: `BatchRunner` on a PostgreSQL journal, over real sockets to the
emulator and a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import anyio
import psycopg
import pytest

from worldrouter_async import Session
from worldrouter_async.batch import (
    BatchItem,
    BatchRunner,
    JournalRow,
    Outcome,
    OutcomeKind,
    PostgresJournal,
    Source,
    State,
)
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator, FakeClock

from .conftest import SessionFactory, batch_items
from .s3 import Bucket
from .test_postgres_journal import terminate

pytestmark = pytest.mark.anyio


async def _run(
    session: Session, journal: str | PostgresJournal, items: list[BatchItem], out: Path | str
) -> list[Outcome]:
    async with BatchRunner(session, journal, job="job", out_dir=out, concurrency=4) as runner:
        return [outcome async for outcome in runner.run(items)]


async def test_three_workers_create_each_request_once_and_all_finish(
    postgres_url: str, make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """Workers running the same job at once split it: every create is sent by one worker,
    and each worker reports every line (others' rows once they are done)."""
    items = batch_items(60)
    reports: list[list[Outcome]] = []

    async def worker() -> None:
        async with make_session() as session:
            reports.append(await _run(session, postgres_url, items, tmp_path / "out"))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as task_group:
            for _ in range(3):
                task_group.start_soon(worker)
    assert emulator.counters.create_requests == emulator.counters.creates == 60
    for outcomes in reports:
        assert sorted(o.key for o in outcomes) == sorted(item.key for item in items)
        assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    sent = [o.key for outcomes in reports for o in outcomes if o.source == Source.NEW]
    assert sorted(sent) == sorted(item.key for item in items)
    assert len(list((tmp_path / "out").glob("r*.png"))) == 60


async def _leave_rows_to_a_dead_worker(url: str, session: Session) -> None:
    """r0 created (its task exists), r1 submitting (create maybe sent), r2 never sent: all
    held by a worker whose connection then dies."""
    doomed = PostgresJournal(url, job="job")
    await doomed.open()
    try:
        rows = [
            JournalRow(item.key, i, item.request, f"idem-{item.key}", State.PENDING)
            for i, item in enumerate(batch_items(3))
        ]
        await doomed.add(rows)
        await doomed.claim([row.key for row in rows])
        for row in rows[:2]:
            await doomed.mark_submitting(row.key)
        handle = await session.submit_request(rows[0].request, idempotency_key="idem-r0")
        await doomed.mark_created("r0", handle.task_id, handle.status)
        await terminate(url, doomed)
    finally:
        await doomed.aclose()


@pytest.mark.parametrize("retry_ambiguous", [False, True])
async def test_a_dead_workers_rows_are_tracked_reported_or_sent_once(
    postgres_url: str,
    make_session: SessionFactory,
    emulator: Emulator,
    tmp_path: Path,
    retry_ambiguous: bool,
) -> None:
    """Taken over: a known task is tracked, a maybe-sent create is ambiguous (resent only
    with retry_ambiguous_creates), a row never sent is sent once."""
    async with make_session(retry_ambiguous_creates=retry_ambiguous) as session:
        await _leave_rows_to_a_dead_worker(postgres_url, session)
        outcomes = {o.key: o for o in await _run(session, postgres_url, batch_items(3), tmp_path)}
    assert (outcomes["r0"].kind, outcomes["r0"].source) == (OutcomeKind.COMPLETED, Source.TRACKED)
    assert (outcomes["r2"].kind, outcomes["r2"].source) == (OutcomeKind.COMPLETED, Source.NEW)
    if retry_ambiguous:
        assert (outcomes["r1"].kind, outcomes["r1"].source) == (
            OutcomeKind.COMPLETED,
            Source.RESUBMITTED,
        )
        assert emulator.counters.create_requests == 3
    else:
        assert (outcomes["r1"].kind, outcomes["r1"].source) == (
            OutcomeKind.AMBIGUOUS,
            Source.JOURNAL,
        )
        assert emulator.counters.create_requests == 2


async def test_rows_of_a_worker_that_dies_mid_run_pass_to_the_running_worker(
    postgres_url: str, session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A worker that holds rows and dies while another runs: the running worker waits for
    those rows, takes them over once the connection is gone, and finishes the job (real
    time: it ends, however long that takes)."""
    items = batch_items(5)
    holder = PostgresJournal(postgres_url, job="job")
    await holder.open()
    try:
        await holder.add(
            [
                JournalRow(i.key, n, i.request, f"idem-{i.key}", State.PENDING)
                for n, i in enumerate(items[:2])
            ]
        )
        await holder.claim(["r0", "r1"])
        outcomes: list[Outcome] = []

        async def run() -> None:
            async with BatchRunner(
                session, postgres_url, job="job", out_dir=tmp_path, worker_timeout=1
            ) as runner:
                async for outcome in runner.run(items):
                    outcomes.append(outcome)  # noqa: PERF401 - watched as it grows

        with anyio.fail_after(60):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(run)
                while len(outcomes) < 3:
                    await anyio.sleep(0.01)
                await terminate(postgres_url, holder)
    finally:
        await holder.aclose()
    assert sorted((o.key, o.kind) for o in outcomes) == [
        (item.key, OutcomeKind.COMPLETED) for item in items
    ]
    assert emulator.counters.create_requests == 5


async def test_held_rows_are_asked_for_again_each_recheck_interval(
    postgres_url: str, session: Session, tmp_path: Path
) -> None:
    """A worker waiting for rows another worker holds asks again a tenth of its worker
    timeout (at most a second) later, on its clock: not before, and then it takes them."""
    clock = FakeClock(autojump=False)
    items = batch_items(3)
    holder = PostgresJournal(postgres_url, job="job")
    await holder.open()
    try:
        await holder.add([JournalRow("r0", 0, items[0].request, "idem-r0", State.PENDING)])
        await holder.claim(["r0"])
        outcomes: list[Outcome] = []

        async def run() -> None:
            async with PostgresJournal(postgres_url, job="job", clock=clock) as store:
                outcomes.extend(await _run(session, store, items, tmp_path))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(run)
                while clock.next_deadline() != 1.0:  # waiting for r0, one recheck away
                    await anyio.sleep(0.01)
                await terminate(postgres_url, holder)
                clock.advance(0.9)
                await anyio.sleep(0.2)
                assert not outcomes  # the run is still waiting: nothing is reported late
                clock.advance(0.1)
    finally:
        await holder.aclose()
    assert sorted((o.key, o.kind) for o in outcomes) == [
        (item.key, OutcomeKind.COMPLETED) for item in items
    ]


async def test_two_workers_put_every_image_in_a_bucket_once(
    postgres_url: str, make_session: SessionFactory, emulator: Emulator, s3_bucket: Bucket
) -> None:
    """A shared job's workers write to one bucket prefix: every image lands there, each
    request created once, beside the one claim both workers accepted."""
    items = batch_items(12)

    async def worker() -> None:
        async with make_session() as session:
            outcomes = await _run(session, postgres_url, items, s3_bucket.url("shared"))
        assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}

    with anyio.fail_after(60):
        async with anyio.create_task_group() as task_group:
            for _ in range(2):
                task_group.start_soon(worker)
    assert emulator.counters.create_requests == 12
    images = sorted(f"shared/{i.key}-0.png" for i in items)
    assert s3_bucket.keys("shared/") == sorted([*images, "shared/.worldrouter-job"])


async def _owned(url: str) -> int:
    """How many rows of the database's jobs some worker holds now."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        try:
            cursor = await connection.execute(
                "SELECT count(*) FROM worldrouter_requests WHERE owner IS NOT NULL"
            )
        except psycopg.errors.UndefinedTable:  # no worker has made the tables yet
            return 0
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _until_owned(url: str, count: int) -> None:
    """Wait (bounded) until `count` rows are held, and fail if more are."""
    with anyio.fail_after(30):
        while (owned := await _owned(url)) < count:
            await anyio.sleep(0.01)
    assert owned == count


async def test_a_small_job_spreads_over_its_workers_a_slice_at_a_time(
    postgres_url: str, tmp_path: Path
) -> None:
    """A worker claims `concurrency` rows at a time, and the next slice only once its create
    workers took the last: so a second worker finds most of a 20-line job free, where it once
    found every row claimed by the first."""
    items = batch_items(20)
    clock = FakeClock(autojump=False)  # the emulator holds every answer until time moves
    sent: list[int] = []

    async def worker() -> None:
        async with Session(
            emulator.api_key, emulator.base_url, poll=FAST_POLL, retry=FAST_RETRY
        ) as session:
            outcomes = await _run(session, postgres_url, items, tmp_path / "out")
        sent.append(sum(o.source == Source.NEW for o in outcomes))

    async with Emulator(clock=clock, slow_rate=1.0, slow_delay=5.0) as emulator:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(worker)
                await _until_owned(postgres_url, 8)  # 4 creates held, 4 rows waiting
                task_group.start_soon(worker)
                await _until_owned(postgres_url, 16)
                while len(sent) < 2:
                    clock.advance(5.0)
                    await anyio.sleep(0.01)
        assert emulator.counters.create_requests == emulator.counters.creates == 20
    assert sum(sent) == 20
    assert min(sent) >= 8, sent
