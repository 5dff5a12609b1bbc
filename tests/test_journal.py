"""The journal file and its lock: nothing silently new, nothing shared, nothing vanished."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest

from worldrouter_async import ImageRequest
from worldrouter_async.batch import JournalError, JournalInUseError, JournalRow, State, read_rows
from worldrouter_async.batch._lock import JournalLock
from worldrouter_async.batch.journal import HighWater, SqliteFile, SqliteJournal


def _row(key: str = "r0") -> JournalRow:
    return JournalRow(
        key=key,
        position=0,
        request=ImageRequest(model="gpt-image-2", prompt="p"),
        idempotency_key="k",
        state=State.PENDING,
    )


def test_a_new_journal_round_trips_rows(tmp_path: Path) -> None:
    """Rows added and transitioned read back with their typed state and files."""
    journal = SqliteFile(tmp_path / "j.db")
    journal.add([_row()])
    journal.set("r0", state=State.COMPLETED, files=("r0-0.png",), digests=("ab",))
    journal.close()
    (row,) = read_rows(tmp_path / "j.db")
    assert (row.state, row.files, row.digests) == (State.COMPLETED, ("r0-0.png",), ("ab",))
    assert isinstance(row.state, State)


def test_zero_byte_journal_is_refused_not_taken_as_new(tmp_path: Path) -> None:
    """An empty file cannot say what was created, so it is an error, not a fresh start."""
    (tmp_path / "j.db").touch()
    with pytest.raises(JournalError, match="is empty"):
        SqliteFile(tmp_path / "j.db")
    assert (tmp_path / "j.db").stat().st_size == 0


@pytest.mark.parametrize("content", [b"hello, not a journal", b"SQLite format 3\x00" + bytes(100)])
def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path, content: bytes) -> None:
    """Any other file (text, or a broken SQLite file) is refused with its path named."""
    (tmp_path / "j.db").write_bytes(content)
    with pytest.raises(JournalError, match="is not a worldrouter-async journal"):
        SqliteFile(tmp_path / "j.db")


def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite file of some other program is not adopted as a journal."""
    db = sqlite3.connect(tmp_path / "other.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="is not a worldrouter-async journal"):
        SqliteFile(tmp_path / "other.db")


def _files_open_under(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    targets = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
    return [target for target in targets if target.startswith(str(folder))]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files from /proc")
@pytest.mark.parametrize("content", [None, b"SQLite format 3\x00" + bytes(100)])
def test_a_refused_file_is_not_left_open(tmp_path: Path, content: bytes | None) -> None:
    """A refusal closes what it opened (Python 3.13 warns of an unclosed database)."""
    path = tmp_path / "j.db"
    if content is None:  # another program's database
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (x)")
        db.close()
    else:
        path.write_bytes(content)
    with pytest.raises(JournalError):
        SqliteFile(path)
    assert _files_open_under(tmp_path) == []


def test_a_deleted_journal_stops_the_next_write(tmp_path: Path) -> None:
    """Deleting the file under an open journal makes the next write fail loudly."""
    journal = SqliteFile(tmp_path / "j.db")
    journal.add([_row()])
    (tmp_path / "j.db").unlink()
    with pytest.raises(JournalError, match="was deleted"):
        journal.set("r0", state=State.FAILED)
    journal.close()


def test_a_replaced_journal_stops_the_next_write(tmp_path: Path) -> None:
    """A different file put in the journal's place is noticed before writing to either."""
    journal = SqliteFile(tmp_path / "j.db")
    journal.add([_row()])
    os.replace(tmp_path / "j.db", tmp_path / "moved.db")
    SqliteFile(tmp_path / "j.db").close()
    with pytest.raises(JournalError, match="was replaced"):
        journal.set("r0", state=State.FAILED)
    journal.close()


def test_a_version_1_journal_is_migrated(tmp_path: Path) -> None:
    """A v0.1 journal (no digests or run columns) opens and keeps its rows."""
    db = sqlite3.connect(tmp_path / "j.db")
    db.executescript(
        "CREATE TABLE requests (key TEXT PRIMARY KEY, position INTEGER NOT NULL, request TEXT"
        " NOT NULL, idempotency_key TEXT NOT NULL, state TEXT NOT NULL, task_id TEXT, status"
        " TEXT, urls TEXT NOT NULL DEFAULT '[]', files TEXT NOT NULL DEFAULT '[]', usage TEXT,"
        " error TEXT, sends INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL);"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "INSERT INTO requests (key, position, request, idempotency_key, state, updated_at)"
        " VALUES ('a', 0, '{\"model\": \"gpt-image-2\", \"prompt\": \"p\"}', 'k', 'created', 0);"
    )
    db.close()
    SqliteFile(tmp_path / "j.db").close()
    (row,) = read_rows(tmp_path / "j.db")
    assert (row.key, row.state, row.digests) == ("a", State.CREATED, ())


def test_a_second_lock_names_the_holding_pid(tmp_path: Path) -> None:
    """While one lock is held, another on the same journal fails at once with the pid."""
    first = JournalLock(tmp_path / "j.db")
    first.acquire()
    second = JournalLock(tmp_path / "j.db")
    with pytest.raises(JournalInUseError, match=f"is in use by pid {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()  # free again once released
    second.release()


@pytest.mark.anyio
async def test_the_journal_limiter_gives_a_freed_token_to_the_waiter_only() -> None:
    """SqliteJournal serializes its calls on one SQLite connection with a CapacityLimiter(1):
    a token freed for a waiting call must not also go to a call arriving in the same instant.

    anyio before 4.14.2 granted it to both (anyio#1170), two writes met on the connection and
    the run stopped with "cannot start a transaction within a transaction"; the anyio floor
    in pyproject.toml is there for this.
    """
    limiter = anyio.CapacityLimiter(1)
    newcomer_may_go = anyio.Event()
    holders_seen: list[int] = []

    async def call(first: anyio.Event | None = None) -> None:
        if first is not None:
            await first.wait()
        async with limiter:
            holders_seen.append(limiter.borrowed_tokens)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        await limiter.acquire()
        group.start_soon(call)  # the waiter, queued for the token
        group.start_soon(call, newcomer_may_go)
        await anyio.wait_all_tasks_blocked()
        newcomer_may_go.set()  # the newcomer resumes first, before...
        limiter.release()  # ...the waiter this release wakes
    assert holders_seen == [1, 1]


@pytest.mark.anyio
async def test_every_commit_is_in_the_journal_file_itself(tmp_path: Path) -> None:
    """A copy of the journal file alone (no -wal, -shm or -journal beside it) holds every
    commit already made, so losing the sidecar files forgets no create that was sent."""
    journal = await SqliteJournal.open(tmp_path / "j.db")
    try:
        await journal.add([_row("r0"), _row("r1")])
        await journal.mark_submitting("r0")
        await journal.mark_submitting("r1")
        await journal.mark_created("r1", "task-1", "queued")
        shutil.copyfile(tmp_path / "j.db", tmp_path / "copy.db")
    finally:
        await journal.aclose()
    rows = {row.key: row for row in read_rows(tmp_path / "copy.db")}
    assert rows["r0"].state == State.SUBMITTING
    assert (rows["r1"].state, rows["r1"].task_id) == (State.CREATED, "task-1")


@pytest.mark.anyio
async def test_a_wal_journal_of_an_older_version_is_folded_into_its_file(tmp_path: Path) -> None:
    """Opening a WAL-mode journal (as older versions wrote) moves its -wal into the file."""
    path = tmp_path / "j.db"
    SqliteFile(path).close()
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("PRAGMA wal_autocheckpoint=0")  # the row stays in the -wal file
    old.execute(
        "INSERT INTO requests (key, position, request, idempotency_key, state, updated_at)"
        " VALUES ('r0', 0, '{\"model\": \"m\", \"prompt\": \"p\"}', 'k', 'created', 0)"
    )
    crashed = tmp_path / "crashed"  # what a killed run of an older version left behind
    crashed.mkdir()
    for name in ("j.db", "j.db-wal"):
        shutil.copyfile(tmp_path / name, crashed / name)
    old.close()
    shutil.copyfile(crashed / "j.db", tmp_path / "before.db")
    assert read_rows(tmp_path / "before.db") == []  # the row is only in the -wal file
    journal = await SqliteJournal.open(crashed / "j.db")
    try:
        shutil.copyfile(crashed / "j.db", tmp_path / "after.db")
    finally:
        await journal.aclose()
    assert [row.key for row in read_rows(tmp_path / "after.db")] == ["r0"]


@pytest.mark.anyio
async def test_writes_queued_together_share_a_commit_and_fail_alone(tmp_path: Path) -> None:
    """Writes that queue while a commit runs share the next one (one sync to disk), yet one
    that fails is undone alone, and the high-water mark moves only after the commit."""
    journal = await SqliteJournal.open(tmp_path / "j.db")
    marks: list[HighWater] = []
    journal.file.on_advance = marks.append
    errors: dict[str, JournalError | None] = {}

    async def add(key: str) -> None:
        try:
            await journal.add([_row(key)])
        except JournalError as exc:
            errors[key] = exc
        else:
            errors[key] = None

    try:
        await journal.add([_row("dup")])
        async with anyio.create_task_group() as task_group:
            for key in ("a", "dup", "b", "c"):  # "a" commits alone; the rest queue behind it
                task_group.start_soon(add, key)
    finally:
        await journal.aclose()
    assert isinstance(errors.pop("dup"), JournalError)
    assert errors == {"a": None, "b": None, "c": None}
    assert sorted(row.key for row in read_rows(tmp_path / "j.db")) == ["a", "b", "c", "dup"]
    assert marks == [HighWater(rows=1), HighWater(rows=2), HighWater(rows=4)]
