"""The PostgreSQL `SharedJournalStore`: many workers, on any machines, run one job together.

Each worker registers on its own connection (a row in ``worldrouter_workers`` and a
session-level advisory lock) and stamps a heartbeat with the database's clock. It acts only
on rows it claimed (``FOR UPDATE SKIP LOCKED``, so a claim never waits for another worker),
and `mark_submitting` commits only while the row is still its own and its lease is fresh,
so a worker whose rows were taken over cannot send their creates. The tables and the
liveness rule are in ``_postgres_schema.py``, the connection (transactions, scrubbed errors)
in ``_postgres_connection.py``, joining the job and the heartbeat in ``_postgres_workers.py``;
this module holds the rows: the `JournalStore` calls, the claims, and the reads of a job.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
from anyio.abc import TaskGroup

from ..._clock import SYSTEM_CLOCK, Clock
from ...models import Usage, converter
from .._errors import JournalError
from . import _postgres_workers as workers
from ._postgres_connection import Database
from ._postgres_schema import FORGET_INVALID, FRESH, PRUNE_DEAD, redact
from ._postgres_workers import LiveWorker
from ._rows import HighWater, InvalidLine, JournalRow, State, encode_request
from ._sqlite_schema import COLUMNS, decode_row
from ._store import Claimed

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_ROWS: Final = ", ".join(f"r.{column}" for column in COLUMNS)


def _intent(job: str, row: JournalRow) -> tuple[Any, ...]:
    """The values of a new row of `job` (the columns `add` names)."""
    request = encode_request(row.request)
    return (job, row.key, row.position, request, row.idempotency_key, row.state, row.run)


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
        self._database = Database(url, name=self.path, timeout=worker_timeout)
        self._task_group: TaskGroup | None = None
        self._worker: int | None = None
        self._job_id: str | None = None

    def __repr__(self) -> str:
        return f"PostgresJournal({redact(self._url)!r}, job={self.job!r})"

    @property
    def database(self) -> str:
        """The database's URL with its password removed."""
        return redact(self._url)

    @property
    def path(self) -> str:
        """The database (password removed) and the job, to name the journal in messages."""
        return f"{self.database} job {self.job}"

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
        await self._database.connect()
        try:
            if not join:
                self._job_id = await self._database.run(
                    lambda connection: workers.existing_job(connection, self.job, redact(self._url))
                )
                return self
            member = await self._database.run(
                lambda connection: workers.join(
                    connection, self.job, timeout=self.worker_timeout, where=redact(self._url)
                )
            )
            self._job_id, self._worker = member.job_id, member.worker
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            self._task_group.start_soon(self._beat)
        except BaseException:
            await self._database.close()
            raise
        return self

    async def aclose(self) -> None:
        """Leave the job (its rows still held pass to others at once) and disconnect."""
        if not self._database.is_open:
            return
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
        # Closing drops the lock, so the rows pass on even when leaving fails.
        await self._database.close(last=workers.LEAVE, params=(self._worker,))

    async def _beat(self) -> None:
        await workers.beat(
            self._database, self.worker_id, timeout=self.worker_timeout, clock=self._clock
        )

    async def read_high_water(self) -> HighWater:
        """The rows and sends the job's workers have committed, read from the database now.

        Both only grow (rows are never deleted, sends only counted), which is what the
        output's claim (``batch/_claim.py``) relies on to notice a job that lost records.
        """
        ((rows, sends),) = await self._database.fetch(
            "SELECT count(*), coalesce(sum(sends), 0) FROM worldrouter_requests WHERE job = %s",
            (self.job,),
        )
        return HighWater(int(rows), int(sends))

    # --- the JournalStore calls ------------------------------------------------------------

    async def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of `keys` that exist."""

        found = await self._database.fetch(
            f"SELECT {_ROWS} FROM worldrouter_requests r"  # noqa: S608 - fixed names
            " WHERE r.job = %s AND r.key = ANY(%s)",
            (self.job, list(keys)),
        )
        return {row.key: row for row in map(decode_row, found)}

    async def add(self, rows: Sequence[JournalRow]) -> None:
        """Record new intents; a key another worker added first keeps that worker's row."""
        if not rows:
            return
        await self._database.execute_many(
            "INSERT INTO worldrouter_requests"
            " (job, key, position, request, idempotency_key, state, run)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [_intent(self.job, row) for row in rows],
        )

    async def mark_seen(self, keys: Sequence[str], run: str) -> None:
        """Stamp `run` on existing rows."""
        await self._database.execute(
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

        await self._database.run(write)

    async def mark_submitting(self, key: str) -> None:
        """Commit ``submitting`` only while this worker holds the row and its lease is fresh;
        otherwise raise `JournalError` and send nothing."""

        sent = await self._database.execute(
            "UPDATE worldrouter_requests SET state = %(state)s, sends = sends + 1,"  # noqa: S608
            " updated_at = now() WHERE job = %(job)s AND key = %(key)s AND owner = %(me)s"
            f" AND EXISTS (SELECT 1 FROM worldrouter_workers WHERE id = %(me)s AND {FRESH})",
            {"state": State.SUBMITTING, "job": self.job, "key": key, "me": self._worker},
        )
        if sent != 1:
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

        rows = await self._database.run(take)
        return Claimed(rows, frozenset(keys).difference(rows))

    async def release(self, key: str) -> None:
        """This worker is done with the row of `key`."""
        await self._database.execute(
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
        return await workers.live_workers(self._database, self.job)

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

            rows = await self._database.run(page)
            if not rows:
                return
            for row in rows:
                yield row
            after = (rows[-1].position, rows[-1].key)

    async def invalid_lines(self) -> list[InvalidLine]:
        """The input lines the job's workers could not send, in input order."""

        found = await self._database.fetch(
            "SELECT line, key, reason, journaled FROM worldrouter_invalid_lines"
            " WHERE job = %s ORDER BY line, key",
            (self.job,),
        )
        return [InvalidLine(*values) for values in found]

    # --- helpers -----------------------------------------------------------------------

    async def _set(self, key: str, **fields: Any) -> None:
        """Set `fields` (column names from this module only) on the row of `key`."""
        assignments = ", ".join(f"{name} = %({name})s" for name in fields)
        await self._database.execute(
            f"UPDATE worldrouter_requests SET {assignments}, updated_at = now()"  # noqa: S608
            " WHERE job = %(job_)s AND key = %(key_)s",
            {**fields, "job_": self.job, "key_": key},
        )
