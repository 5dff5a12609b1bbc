"""The PostgreSQL `SharedJournalStore`: many workers, on any machines, run one job together.

Each worker registers on its own connection (a row in ``worldrouter_workers`` and a
session-level advisory lock) and stamps a heartbeat with the database's clock. It acts only
on rows it claimed (``FOR UPDATE SKIP LOCKED``, so a claim never waits for another worker),
and `mark_submitting` commits only while the row is still its own and its lease is fresh,
so a worker whose rows were taken over cannot send their creates. The tables and the
liveness rule are in ``_postgres_schema.py``. psycopg is imported only when a store opens,
so the base install works without the ``postgres`` extra.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import anyio
from anyio.abc import TaskGroup
from attrs import define

from ..._clock import SYSTEM_CLOCK, Clock
from ...models import Usage, converter
from .._errors import JournalError
from ._postgres_schema import (
    FORGET_INVALID,
    HOLDINGS,
    LOCK_CLASS,
    PRUNE_DEAD,
    SCHEMA,
    SCHEMA_VERSION,
    redact,
    secrets_of,
)
from ._rows import InvalidLine, JournalRow, State, encode_request
from ._sqlite_schema import COLUMNS, decode_row
from ._store import Claimed

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_T = TypeVar("_T")
#: Seconds a statement may run before PostgreSQL cancels it (claims never wait on locks).
STATEMENT_TIMEOUT: Final = 60.0
_ROWS: Final = ", ".join(f"r.{column}" for column in COLUMNS)
_EXTRA: Final = 'pip install "worldrouter-async[postgres]"'


@define(frozen=True)
class LiveWorker:
    """A worker of a shared job that is alive now, and how many rows it holds."""

    id: int
    host: str
    pid: int
    started_at: datetime
    holds: int


async def _connect(url: str, *, timeout: float) -> AsyncConnection[Any]:
    """An autocommit connection to `url`; a clear error when psycopg or the server is missing."""
    try:
        import psycopg  # optional: only a postgresql:// journal needs it
    except ImportError as exc:
        raise JournalError(
            f"a postgresql:// journal needs the psycopg driver, which is not installed: {_EXTRA}"
        ) from exc
    idle = max(1, int(timeout / 3))
    try:
        connection = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=max(2, int(timeout)),
            # A lost server is noticed by the client, a lost client by the server, within
            # about `timeout`: the server then drops the worker's lock and its rows pass on.
            keepalives=1,
            keepalives_idle=idle,
            keepalives_interval=max(1, idle // 3),
            keepalives_count=3,
        )
        await connection.execute(
            f"SET statement_timeout = {int(STATEMENT_TIMEOUT * 1000)};"
            f"SET tcp_keepalives_idle = {idle};"
            f"SET tcp_keepalives_interval = {max(1, idle // 3)};"
            "SET tcp_keepalives_count = 3"
        )
    except psycopg.Error as exc:
        raise _scrubbed(f"cannot connect to the journal at {redact(url)}", exc, url) from None
    return connection


def _scrubbed(what: str, exc: BaseException, url: str) -> JournalError:
    """`JournalError` for `exc`, with every password of `url` removed from its text."""
    text = str(exc).strip()
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return JournalError(f"{what} ({text})")


class PostgresJournal:
    """The PostgreSQL journal: several workers, on any machines, share one job.

    Give `BatchRunner` the URL (``BatchRunner(session, "postgresql://...", job="NAME")``) and
    it opens and closes the store; or open one yourself (``async with PostgresJournal(...)``)
    and pass it. Needs the ``postgres`` extra (psycopg 3).

    Args:
        url: ``postgresql://USER@HOST:PORT/DB``; a password in it never appears in messages.
        job: the job's name in the database (several jobs can share one).
        worker_timeout: seconds a silent worker keeps its rows before other workers take
            them; a worker whose connection closes (killed, terminated) loses them at once.
        clock: where the heartbeat and the waits for held rows read the time.

    Example:
        >>> async def main(session, requests):  # doctest: +SKIP
        ...     url = "postgresql://batch@db.internal/images"
        ...     async with BatchRunner(session, url, job="cats", out_dir="images") as runner:
        ...         async for outcome in runner.run(requests):
        ...             print(outcome.key, outcome.kind)
    """

    def __init__(
        self, url: str, *, job: str, worker_timeout: float = 30.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if not job:
            raise JournalError("a PostgreSQL journal needs a job name (CLI: --job NAME)")
        if worker_timeout <= 0:
            raise JournalError(
                f"worker_timeout must be more than 0 seconds (got {worker_timeout!r})"
            )
        self._url = url
        self.job = job
        self.worker_timeout = worker_timeout
        self._clock = clock
        self._connection: AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()
        self._task_group: TaskGroup | None = None
        self._worker: int | None = None
        self._job_id: str | None = None

    def __repr__(self) -> str:
        return f"PostgresJournal({redact(self._url)!r}, job={self.job!r})"

    @property
    def path(self) -> str:
        """The database (password removed) and the job, to name the journal in messages."""
        return f"{redact(self._url)} job {self.job}"

    @property
    def worker_id(self) -> int:
        """This worker's id in the database (``worldrouter_workers.id``), once open."""
        if self._worker is None:
            raise RuntimeError("open the PostgresJournal first ('async with' or 'await open()')")
        return self._worker

    @property
    def job_id(self) -> str:
        """The job's unique id, made when its first worker opened it (a UUID), once open."""
        if self._job_id is None:
            raise RuntimeError("open the PostgresJournal first ('async with' or 'await open()')")
        return self._job_id

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self, *, join: bool = True) -> Self:
        """Connect, create the tables on first use, and join the job as a live worker.

        With ``join=False`` only read the job (`worldrouter-async status`): nothing is
        created, and a job the database does not hold raises `JournalError`.
        `aclose` must be awaited in the same task (the heartbeat's task group spans both).
        """
        self._connection = await _connect(self._url, timeout=self.worker_timeout)
        try:
            if not join:
                await self._run(self._find_job)
                return self
            await self._run(self._register)
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            self._task_group.start_soon(self._beat)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._connection.close()
            self._connection = None
            raise
        return self

    async def aclose(self) -> None:
        """Leave the job (its rows still held pass to others at once) and disconnect."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            # Closing drops the lock, so the rows pass on even when this fails.
            with contextlib.suppress(Exception):
                await connection.execute(
                    "DELETE FROM worldrouter_workers WHERE id = %s", (self._worker,)
                )
            await connection.close()

    async def _run(self, work: Callable[[AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        """Run `work` in one transaction, alone on the connection, to its end even when
        cancelled (a statement cut off midway would leave the connection unusable)."""
        import psycopg  # loaded by `_connect` already

        connection = self._connection
        if connection is None:
            raise JournalError(f"the journal {self.path} is closed")
        with anyio.CancelScope(shield=True):
            async with self._lock:
                try:
                    async with connection.transaction():
                        done = await work(connection)
                except psycopg.Error as exc:
                    raise _scrubbed(
                        f"cannot use the journal {self.path}; the run stopped and everything "
                        "recorded so far is kept: rerun once the database is reachable",
                        exc,
                        self._url,
                    ) from None
        return done

    async def _find_job(self, connection: AsyncConnection[Any]) -> None:
        found = None
        tables = await connection.execute("SELECT to_regclass('worldrouter_jobs') IS NOT NULL")
        if await tables.fetchone() == (True,):
            found = await (
                await connection.execute(
                    "SELECT id FROM worldrouter_jobs WHERE name = %s", (self.job,)
                )
            ).fetchone()
        if found is None:
            raise JournalError(
                f"no job {self.job!r} in the journal at {redact(self._url)}; pass the --job "
                "that batch ran with (its default is the input file's name without extension)"
            )
        self._job_id = str(found[0])

    async def _register(self, connection: AsyncConnection[Any]) -> None:
        await connection.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
        await connection.execute(SCHEMA)
        found = await (
            await connection.execute(
                "SELECT value FROM worldrouter_meta WHERE name = 'schema_version'"
            )
        ).fetchone()
        if found is None or found[0] != SCHEMA_VERSION:
            raise JournalError(
                f"the journal tables in {redact(self._url)} have schema version "
                f"{found and found[0]}, this worldrouter-async reads version {SCHEMA_VERSION}: "
                "upgrade worldrouter-async (every worker of a job runs the same version)"
            )
        await connection.execute(
            "INSERT INTO worldrouter_jobs (name) VALUES (%s) ON CONFLICT DO NOTHING", (self.job,)
        )
        job = await (
            await connection.execute("SELECT id FROM worldrouter_jobs WHERE name = %s", (self.job,))
        ).fetchone()
        assert job is not None
        self._job_id = str(job[0])
        worker = await (
            await connection.execute(
                "INSERT INTO worldrouter_workers (job, host, pid, timeout_s)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (self.job, socket.gethostname(), os.getpid(), self.worker_timeout),
            )
        ).fetchone()
        assert worker is not None
        self._worker = worker[0]
        # Taken inside the transaction that adds the worker: nobody sees it without its lock.
        await connection.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, self._worker))

    async def _beat(self) -> None:
        """Renew this worker's lease every third of its timeout, until it lapses or fails."""
        while True:
            await self._clock.sleep_until(self._clock.now() + self.worker_timeout / 3)
            try:
                renewed = await self._run(self._renew)
            except JournalError:
                return  # the next write reports the broken connection
            if not renewed:
                return  # lapsed: the rows may be another worker's; mark_submitting refuses

    async def _renew(self, connection: AsyncConnection[Any]) -> bool:
        cursor = await connection.execute(
            "UPDATE worldrouter_workers SET heartbeat = now() WHERE id = %s"
            " AND heartbeat > now() - make_interval(secs => timeout_s)",
            (self._worker,),
        )
        return cursor.rowcount == 1

    # --- the JournalStore calls ------------------------------------------------------------

    async def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of `keys` that exist."""

        async def read(connection: AsyncConnection[Any]) -> dict[str, JournalRow]:
            cursor = await connection.execute(
                f"SELECT {_ROWS} FROM worldrouter_requests r"  # noqa: S608 - fixed names
                " WHERE r.job = %s AND r.key = ANY(%s)",
                (self.job, list(keys)),
            )
            return {row.key: row for row in map(decode_row, await cursor.fetchall())}

        return await self._run(read)

    async def add(self, rows: Sequence[JournalRow]) -> None:
        """Record new intents; a key another worker added first keeps that worker's row."""
        if not rows:
            return
        values = [
            (
                self.job,
                r.key,
                r.position,
                encode_request(r.request),
                r.idempotency_key,
                r.state,
                r.run,
            )
            for r in rows
        ]

        async def write(connection: AsyncConnection[Any]) -> None:
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO worldrouter_requests"
                    " (job, key, position, request, idempotency_key, state, run)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    values,
                )

        await self._run(write)

    async def mark_seen(self, keys: Sequence[str], run: str) -> None:
        """Stamp `run` on existing rows."""
        await self._execute(
            "UPDATE worldrouter_requests SET run = %s WHERE job = %s AND key = ANY(%s)",
            (run, self.job, list(keys)),
        )

    async def record_invalid(self, run: str, lines: Sequence[InvalidLine]) -> None:
        """Record lines `run` could not send; ``[]`` forgets those of runs no live worker is
        doing (the workers of one job read the same input, so a line is recorded once)."""

        async def write(connection: AsyncConnection[Any]) -> None:
            if not lines:
                await connection.execute(
                    "UPDATE worldrouter_workers SET run = %s WHERE id = %s", (run, self._worker)
                )
                await connection.execute(FORGET_INVALID, {"job": self.job})
                return
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO worldrouter_invalid_lines"
                    " (job, line, key, reason, journaled, run) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(self.job, i.line, i.key, i.reason, i.journaled, run) for i in lines],
                )

        await self._run(write)

    async def mark_submitting(self, key: str) -> None:
        """Commit ``submitting`` only while this worker holds the row and its lease is fresh;
        otherwise raise `JournalError` and send nothing."""

        async def write(connection: AsyncConnection[Any]) -> int:
            cursor = await connection.execute(
                "UPDATE worldrouter_requests SET state = %(state)s, sends = sends + 1,"
                " updated_at = now() WHERE job = %(job)s AND key = %(key)s AND owner = %(me)s"
                " AND EXISTS (SELECT 1 FROM worldrouter_workers WHERE id = %(me)s"
                " AND heartbeat > now() - make_interval(secs => timeout_s))",
                {"state": State.SUBMITTING, "job": self.job, "key": key, "me": self._worker},
            )
            return cursor.rowcount

        if await self._run(write) != 1:
            raise JournalError(
                f"this worker no longer holds request {key!r} of job {self.job!r}: it was "
                f"silent for more than its worker timeout ({self.worker_timeout:g} s), so its "
                "rows passed to other workers; nothing was sent for it. Rerun to rejoin the job"
            )

    async def mark_created(self, key: str, task_id: str | None, status: str | None) -> None:
        """Record the task ID."""
        await self._set(key, state=State.CREATED, task_id=task_id, status=status, error=None)

    async def mark_pending(self, key: str, error: str) -> None:
        """Back to pending: nothing was created."""
        await self._set(key, state=State.PENDING, error=error)

    async def mark_ambiguous(self, key: str, error: str) -> None:
        """Stays submitting, with the reason."""
        await self._set(key, state=State.SUBMITTING, error=error)

    async def mark_failed(self, key: str, error: str, *, usage: Usage | None = None) -> None:
        """Failed for good (with the usage of a task that was paid for, if any)."""
        paid = {"usage": json.dumps(converter.unstructure(usage))} if usage is not None else {}
        await self._set(key, state=State.FAILED, error=error, **paid)

    async def mark_expired(self, key: str, error: str) -> None:
        """The server forgot the task."""
        await self._set(key, state=State.EXPIRED, error=error)

    async def mark_unfinished(self, key: str, status: str | None, error: str) -> None:
        """Still created; tracked again by a rerun."""
        await self._set(key, status=status, error=error)

    async def mark_completed(
        self, key: str, status: str, urls: Sequence[str], usage: Usage | None
    ) -> None:
        """Completed, with its URLs and usage."""
        usage_json = json.dumps(converter.unstructure(usage)) if usage is not None else None
        await self._set(
            key,
            state=State.COMPLETED,
            status=status,
            urls=json.dumps(list(urls)),
            usage=usage_json,
            error=None,
        )

    async def mark_files(self, key: str, files: Sequence[str], digests: Sequence[str]) -> None:
        """Files saved."""
        await self._set(
            key, files=json.dumps(list(files)), digests=json.dumps(list(digests)), error=None
        )

    async def mark_download_failed(self, key: str, error: str) -> None:
        """Files not saved; a rerun downloads them."""
        await self._set(key, files="[]", digests="[]", error=error)

    # --- claims ------------------------------------------------------------------------

    async def claim(self, keys: Sequence[str]) -> Claimed:
        """Take the rows of `keys` that no live worker holds (the dead are forgotten first)."""

        async def take(connection: AsyncConnection[Any]) -> dict[str, JournalRow]:
            await connection.execute(PRUNE_DEAD, {"job": self.job})
            cursor = await connection.execute(
                f"UPDATE worldrouter_requests r SET owner = %(me)s FROM ("  # noqa: S608
                " SELECT key FROM worldrouter_requests WHERE job = %(job)s"
                " AND key = ANY(%(keys)s) AND owner IS NULL FOR UPDATE SKIP LOCKED) free"
                " WHERE r.job = %(job)s AND r.key = free.key"
                " AND EXISTS (SELECT 1 FROM worldrouter_workers WHERE id = %(me)s)"
                f" RETURNING {_ROWS}",
                {"me": self._worker, "job": self.job, "keys": list(keys)},
            )
            return {row.key: row for row in map(decode_row, await cursor.fetchall())}

        rows = await self._run(take)
        return Claimed(rows, frozenset(keys).difference(rows))

    async def release(self, key: str) -> None:
        """This worker is done with the row of `key`."""
        await self._execute(
            "UPDATE worldrouter_requests SET owner = NULL"
            " WHERE job = %s AND key = %s AND owner = %s",
            (self.job, key, self._worker),
        )

    async def wait_for_others(self) -> None:
        """Wait a tenth of the worker timeout (at most a second) before asking again."""
        await self._clock.sleep_until(self._clock.now() + min(1.0, self.worker_timeout / 10))

    # --- reading a job (status) --------------------------------------------------------

    async def live_workers(self) -> list[LiveWorker]:
        """The job's live workers and the rows each holds, oldest first."""

        async def read(connection: AsyncConnection[Any]) -> list[LiveWorker]:
            cursor = await connection.execute(HOLDINGS, {"job": self.job})
            return [LiveWorker(*values) for values in await cursor.fetchall()]

        return await self._run(read)

    async def iter_rows(self) -> AsyncIterator[JournalRow]:
        """Every row of the job, in input order, a page at a time (memory stays flat)."""
        after: tuple[int, str] = (-1, "")
        while True:

            async def page(
                connection: AsyncConnection[Any], after: tuple[int, str] = after
            ) -> list[JournalRow]:
                cursor = await connection.execute(
                    f"SELECT {_ROWS} FROM worldrouter_requests r WHERE r.job = %s"  # noqa: S608
                    " AND (r.position, r.key) > (%s, %s) ORDER BY r.position, r.key LIMIT 1000",
                    (self.job, *after),
                )
                return [decode_row(values) for values in await cursor.fetchall()]

            rows = await self._run(page)
            if not rows:
                return
            for row in rows:
                yield row
            after = (rows[-1].position, rows[-1].key)

    async def invalid_lines(self) -> list[InvalidLine]:
        """The input lines the job's workers could not send, in input order."""

        async def read(connection: AsyncConnection[Any]) -> list[InvalidLine]:
            cursor = await connection.execute(
                "SELECT line, key, reason, journaled FROM worldrouter_invalid_lines"
                " WHERE job = %s ORDER BY line, key",
                (self.job,),
            )
            return [InvalidLine(*values) for values in await cursor.fetchall()]

        return await self._run(read)

    # --- helpers -----------------------------------------------------------------------

    async def _execute(self, statement: str, params: Sequence[Any]) -> None:
        async def write(connection: AsyncConnection[Any]) -> None:
            await connection.execute(statement, params)

        await self._run(write)

    async def _set(self, key: str, **fields: Any) -> None:
        """Set `fields` (column names from this module only) on the row of `key`."""
        assignments = ", ".join(f"{name} = %({name})s" for name in fields)
        await self._run(
            lambda connection: connection.execute(
                f"UPDATE worldrouter_requests SET {assignments}, updated_at = now()"  # noqa: S608
                " WHERE job = %(job_)s AND key = %(key_)s",
                {**fields, "job_": self.job, "key_": key},
            )
        )
