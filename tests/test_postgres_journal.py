"""The PostgreSQL journal as a shared store: claims, liveness from the database, schema,
secrets, on a real PostgreSQL server."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import psycopg
import pytest

from worldrouter_async import ImageRequest
from worldrouter_async.batch import JournalError, JournalRow, PostgresJournal, State
from worldrouter_async.testing import FakeClock

pytestmark = pytest.mark.anyio


def _row(key: str, idempotency_key: str = "") -> JournalRow:
    request = ImageRequest(model="gpt-image-2", prompt=f"prompt {key}")
    return JournalRow(key, 0, request, idempotency_key or f"idem-{key}", State.PENDING)


async def terminate(url: str, worker: PostgresJournal) -> None:
    """Kill the worker's connection from the server side, as a lost process would lose it,
    and wait until its backend is gone (and with it the worker's advisory lock)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        found = await admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s::oid"
            " AND objsubid = 2",
            (worker.worker_id,),
        )
        pids = [pid for (pid,) in await found.fetchall()]
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
        with anyio.fail_after(30):
            while await (
                await admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            ).fetchone():
                await anyio.sleep(0.01)


async def test_the_first_intent_wins_and_every_worker_reads_its_idempotency_key(
    postgres_url: str,
) -> None:
    """Two workers adding the same key keep the first row; the claim returns it as stored."""
    async with (
        PostgresJournal(postgres_url, job="j") as first,
        PostgresJournal(postgres_url, job="j") as second,
    ):
        await first.add([_row("a", "key-of-first")])
        await second.add([_row("a", "key-of-second")])
        claimed = await second.claim(["a"])
    assert claimed.rows["a"].idempotency_key == "key-of-first"
    assert claimed.held == frozenset()


async def test_a_row_is_held_by_one_worker_until_released(postgres_url: str) -> None:
    """A claimed row is held from the others, who may claim it once it is released."""
    async with (
        PostgresJournal(postgres_url, job="j") as first,
        PostgresJournal(postgres_url, job="j") as second,
    ):
        await first.add([_row("a"), _row("b")])
        assert set((await first.claim(["a"])).rows) == {"a"}
        taken = await second.claim(["a", "b"])
        assert (set(taken.rows), taken.held) == ({"b"}, frozenset({"a"}))
        await first.release("a")
        assert set((await second.claim(["a"])).rows) == {"a"}


async def test_a_worker_sends_nothing_for_a_row_it_does_not_hold(postgres_url: str) -> None:
    """`mark_submitting` refuses (and changes nothing) for a row another worker holds."""
    async with (
        PostgresJournal(postgres_url, job="j") as first,
        PostgresJournal(postgres_url, job="j") as second,
    ):
        await first.add([_row("a")])
        await first.claim(["a"])
        with pytest.raises(JournalError, match="no longer holds request 'a'"):
            await second.mark_submitting("a")
        row = (await second.lookup(["a"]))["a"]
    assert (row.state, row.sends) == (State.PENDING, 0)


async def test_a_killed_connection_passes_its_rows_on_at_once(postgres_url: str) -> None:
    """A worker whose connection dies (SIGKILL, lost node) loses its advisory lock, so its
    rows are claimable at once, long before its worker timeout."""
    async with PostgresJournal(postgres_url, job="j", worker_timeout=3600) as survivor:
        doomed = PostgresJournal(postgres_url, job="j", worker_timeout=3600)
        await doomed.open()
        try:
            await doomed.add([_row("a")])
            await doomed.claim(["a"])
            assert (await survivor.claim(["a"])).held == {"a"}
            assert [w.holds for w in await survivor.live_workers()] == [0, 1]
            await terminate(postgres_url, doomed)
            assert set((await survivor.claim(["a"])).rows) == {"a"}
            assert [w.id for w in await survivor.live_workers()] == [survivor.worker_id]
            with pytest.raises(JournalError, match="cannot use the journal"):
                await doomed.mark_submitting("a")
        finally:
            await doomed.aclose()


async def test_a_silent_worker_loses_its_rows_and_cannot_send(postgres_url: str) -> None:
    """A worker whose heartbeat is older than its timeout (hung, its connection still open)
    is dead by the database's clock: its rows pass on, and it cannot mark them submitting."""
    async with (
        PostgresJournal(postgres_url, job="j", worker_timeout=3600) as hung,
        PostgresJournal(postgres_url, job="j") as survivor,
    ):
        await hung.add([_row("a")])
        await hung.claim(["a"])
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(
                "UPDATE worldrouter_workers SET heartbeat = now() - interval '2 hours'"
                " WHERE id = %s",
                (hung.worker_id,),
            )
        assert set((await survivor.claim(["a"])).rows) == {"a"}
        with pytest.raises(JournalError, match="no longer holds request 'a'"):
            await hung.mark_submitting("a")


async def test_the_heartbeat_keeps_a_worker_alive_past_its_timeout(postgres_url: str) -> None:
    """A worker that is idle for longer than its timeout keeps its rows: the heartbeat renews
    its lease on the database's clock (real time: it ends, however long it takes)."""
    async with (
        PostgresJournal(postgres_url, job="j", worker_timeout=0.6) as idle,
        PostgresJournal(postgres_url, job="j") as other,
    ):
        await idle.add([_row("a")])
        await idle.claim(["a"])
        await anyio.sleep(1.5)
        assert (await other.claim(["a"])).held == {"a"}
        await idle.mark_submitting("a")


async def test_jobs_in_one_database_do_not_see_each_other(postgres_url: str) -> None:
    """The same key in two jobs is two rows; a worker of one job holds nothing of the other."""
    async with (
        PostgresJournal(postgres_url, job="cats") as cats,
        PostgresJournal(postgres_url, job="dogs") as dogs,
    ):
        await cats.add([_row("a", "cat-key")])
        await dogs.add([_row("a", "dog-key")])
        await cats.claim(["a"])
        assert (await dogs.claim(["a"])).rows["a"].idempotency_key == "dog-key"
        assert [w.id for w in await dogs.live_workers()] == [dogs.worker_id]
        assert cats.job_id != dogs.job_id


async def test_workers_starting_at_once_create_the_tables_once(postgres_url: str) -> None:
    """Four workers opening a fresh database together all join (an advisory lock orders the
    schema creation); the schema version is recorded."""
    joined: list[PostgresJournal] = []
    counted = anyio.Event()

    async def join() -> None:
        async with PostgresJournal(postgres_url, job="j") as worker:
            joined.append(worker)
            await counted.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as task_group:
            for _ in range(4):
                task_group.start_soon(join)
            while len(joined) < 4:
                await anyio.sleep(0.01)
            assert len(await joined[0].live_workers()) == 4
            counted.set()
    async with await psycopg.AsyncConnection.connect(postgres_url) as admin:
        version = await (
            await admin.execute("SELECT value FROM worldrouter_meta WHERE name = 'schema_version'")
        ).fetchone()
    assert version == ("1",)


async def test_tables_of_another_schema_version_are_refused(postgres_url: str) -> None:
    """A database whose tables a newer release made is refused with the version and the fix."""
    async with PostgresJournal(postgres_url, job="j"):
        pass
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute("UPDATE worldrouter_meta SET value = '9'")
    with pytest.raises(JournalError, match=r"schema version 9.*upgrade worldrouter-async"):
        await PostgresJournal(postgres_url, job="j").open()


async def test_a_password_never_appears_in_messages(postgres_url: str) -> None:
    """The URL's password stays out of the repr, the journal's name and connection errors."""
    secret = "hunter2-s3cret"
    with_password = postgres_url.replace("postgres@", f"postgres:{secret}@")
    store = PostgresJournal(with_password, job="j")
    async with store:
        assert secret not in repr(store)
        assert secret not in store.path
    unreachable = f"postgresql://postgres:{secret}@127.0.0.1:1/db?password={secret}"
    with pytest.raises(JournalError) as caught:
        await PostgresJournal(unreachable, job="j", worker_timeout=2).open()
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None
    assert "cannot connect to the journal at postgresql://postgres@127.0.0.1:1/db" in str(
        caught.value
    )


async def test_without_psycopg_the_error_names_the_extra(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base install has no driver: opening a PostgreSQL journal says what to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(JournalError, match=r"worldrouter-async\[postgres\]"):
        await PostgresJournal(postgres_url, job="j").open()


def test_a_job_name_and_a_positive_timeout_are_required(postgres_url: str) -> None:
    """An empty job or a timeout of zero is refused before anything connects."""
    with pytest.raises(JournalError, match="--job NAME"):
        PostgresJournal(postgres_url, job="")
    with pytest.raises(JournalError, match="more than 0 seconds"):
        PostgresJournal(postgres_url, job="j", worker_timeout=0)


async def _backend_of(admin: psycopg.AsyncConnection[Any], worker: PostgresJournal) -> int:
    """The server process of `worker`'s connection (the one holding its advisory lock)."""
    found = await admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s::oid AND objsubid = 2",
        (worker.worker_id,),
    )
    row = await found.fetchone()
    assert row is not None
    return int(row[0])


async def _heartbeat(admin: psycopg.AsyncConnection[Any], worker: PostgresJournal) -> object:
    found = await admin.execute(
        "SELECT heartbeat FROM worldrouter_workers WHERE id = %s", (worker.worker_id,)
    )
    row = await found.fetchone()
    assert row is not None
    return row[0]


async def test_a_failed_renewal_is_tried_again_at_the_next_beat(postgres_url: str) -> None:
    """A heartbeat whose renewal fails once (here: its statement cancelled while it waited
    on a lock) renews at the next beat, instead of stopping for good and costing the worker
    its rows a worker timeout later."""
    clock = FakeClock(autojump=False)
    async with (
        PostgresJournal(postgres_url, job="j", worker_timeout=3600, clock=clock) as worker,
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin,
        await psycopg.AsyncConnection.connect(postgres_url) as blocker,
    ):
        backend = await _backend_of(admin, worker)
        await blocker.execute(  # a transaction holding the worker's row: the renewal waits
            "SELECT 1 FROM worldrouter_workers WHERE id = %s FOR UPDATE", (worker.worker_id,)
        )
        clock.advance(1200)
        with anyio.fail_after(30):
            while not await (
                await admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                    (backend,),
                )
            ).fetchone():
                await anyio.sleep(0.01)
        await admin.execute("SELECT pg_cancel_backend(%s)", (backend,))
        with anyio.fail_after(30):  # idle while the lock is still held: the renewal failed
            while not await (
                await admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'idle'", (backend,)
                )
            ).fetchone():
                await anyio.sleep(0.01)
        await blocker.rollback()
        before = await _heartbeat(admin, worker)
        clock.advance(1200)
        with anyio.fail_after(30):
            while await _heartbeat(admin, worker) == before:
                await anyio.sleep(0.01)
