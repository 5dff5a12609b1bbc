"""The `JournalStore` contract, held by every store that ships: SQLite and PostgreSQL.

Each test runs once per store, against a real SQLite file and a real PostgreSQL server.
A shared store acts only on rows it claimed, so the tests claim rows before marking them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from worldrouter_async import ImageRequest, Usage
from worldrouter_async.batch import (
    InvalidLine,
    JournalRow,
    JournalStore,
    PostgresJournal,
    SharedJournalStore,
    SqliteJournal,
    State,
)

pytestmark = pytest.mark.anyio

Opener = Callable[[], AbstractAsyncContextManager[JournalStore]]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store under test; each call opens the same journal again."""
    if request.param == "sqlite":

        @asynccontextmanager
        async def sqlite() -> AsyncIterator[JournalStore]:
            store = await SqliteJournal.open(tmp_path / "journal.sqlite3")
            try:
                yield store
            finally:
                await store.aclose()

        return sqlite
    url = request.getfixturevalue("postgres_url")

    @asynccontextmanager
    async def postgres() -> AsyncIterator[JournalStore]:
        async with PostgresJournal(url, job="contract") as store:
            yield store

    return postgres


async def _invalid(store: JournalStore) -> list[InvalidLine]:
    if isinstance(store, SqliteJournal):
        return list(store.file.iter_invalid())
    assert isinstance(store, PostgresJournal)
    return await store.invalid_lines()


def _row(key: str, position: int = 0) -> JournalRow:
    request = ImageRequest(model="gpt-image-2", prompt=f"prompt {key}", n=2)
    return JournalRow(key, position, request, f"idem-{key}", State.PENDING, run="run-1")


async def _added(store: JournalStore, keys: Sequence[str]) -> None:
    await store.add([_row(key, i) for i, key in enumerate(keys)])
    if isinstance(store, SharedJournalStore):
        assert set((await store.claim(keys)).rows) == set(keys)


async def test_intents_round_trip_with_their_idempotency_keys(open_store: Opener) -> None:
    """What `add` commits, `lookup` returns field for field; unknown keys are left out."""
    async with open_store() as store:
        await store.add([_row("a", 0), _row("b", 1)])
        found = await store.lookup(["a", "b", "missing"])
    assert found == {"a": _row("a", 0), "b": _row("b", 1)}


async def test_every_write_is_committed_when_it_returns(open_store: Opener) -> None:
    """A store opened again (as after a crash) finds every transition that returned."""
    usage = Usage(input_tokens=1, output_tokens=2, total_tokens=3)
    async with open_store() as store:
        await _added(store, ["sent", "done", "lost", "broken"])
        for key in ("sent", "done", "lost", "broken"):
            await store.mark_submitting(key)
        await store.mark_ambiguous("sent", "no answer")
        await store.mark_created("done", "task-1", "queued")
        await store.mark_completed("done", "completed", ["https://x/1.png"], usage)
        await store.mark_files("done", ["done-0.png"], ["abc"])
        await store.mark_created("lost", "task-2", "queued")
        await store.mark_expired("lost", "forgotten")
        await store.mark_failed("broken", "refused", usage=usage)
    async with open_store() as store:
        rows = await store.lookup(["sent", "done", "lost", "broken"])
    assert (rows["sent"].state, rows["sent"].error, rows["sent"].sends) == (
        State.SUBMITTING,
        "no answer",
        1,
    )
    done = rows["done"]
    assert (done.state, done.task_id, done.status, done.urls, done.usage) == (
        State.COMPLETED,
        "task-1",
        "completed",
        ("https://x/1.png",),
        usage,
    )
    assert (done.files, done.digests, done.error) == (("done-0.png",), ("abc",), None)
    assert (rows["lost"].state, rows["lost"].task_id) == (State.EXPIRED, "task-2")
    assert (rows["broken"].state, rows["broken"].usage) == (State.FAILED, usage)


async def test_sends_only_grow_and_pending_keeps_them(open_store: Opener) -> None:
    """Each `mark_submitting` counts a send; back to pending keeps the count and the reason."""
    async with open_store() as store:
        await _added(store, ["a"])
        await store.mark_submitting("a")
        await store.mark_pending("a", "429")
        await store.mark_submitting("a")
        await store.mark_created("a", "task-a", None)
        await store.mark_unfinished("a", "running", "deadline")
        row = (await store.lookup(["a"]))["a"]
    assert (row.state, row.sends, row.task_id, row.status, row.error) == (
        State.CREATED,
        2,
        "task-a",
        "running",
        "deadline",
    )


async def test_a_failed_download_clears_the_files_and_a_new_one_records_them(
    open_store: Opener,
) -> None:
    """`mark_download_failed` forgets the files with the reason; `mark_files` sets them anew."""
    async with open_store() as store:
        await _added(store, ["a"])
        await store.mark_submitting("a")
        await store.mark_completed("a", "completed", ["u"], None)
        await store.mark_files("a", ["a-0.png"], ["d"])
        await store.mark_download_failed("a", "disk full")
        failed = (await store.lookup(["a"]))["a"]
        await store.mark_files("a", ["a-0.png"], ["e"])
        saved = (await store.lookup(["a"]))["a"]
    assert (failed.state, failed.files, failed.digests, failed.error) == (
        State.COMPLETED,
        (),
        (),
        "disk full",
    )
    assert (saved.files, saved.digests, saved.error) == (("a-0.png",), ("e",), None)


async def test_mark_seen_stamps_the_run(open_store: Opener) -> None:
    """A row read again in another run carries that run's id."""
    async with open_store() as store:
        await store.add([_row("a")])
        await store.mark_seen(["a"], "run-2")
        assert (await store.lookup(["a"]))["a"].run == "run-2"


async def test_invalid_lines_accumulate_per_run_and_a_new_run_forgets_old_ones(
    open_store: Opener,
) -> None:
    """Lines of one run add up across calls; the next run's start clears them."""
    first = [InvalidLine(2, "line-2", "unreadable")]
    second = [InvalidLine(5, "a", "repeats", journaled=False)]
    async with open_store() as store:
        await store.record_invalid("run-1", [])
        await store.record_invalid("run-1", first)
        await store.record_invalid("run-1", second)
        assert await _invalid(store) == [*first, *second]
    async with open_store() as store:
        await store.record_invalid("run-2", [])
        assert await _invalid(store) == []
