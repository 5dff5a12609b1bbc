"""The workers of a PostgreSQL job: joining it, the heartbeat, and who is alive now.

A worker joins by adding its row to ``worldrouter_workers`` and taking a session-level
advisory lock named by its id, in one transaction, so nobody sees the worker without its
lock. It then stamps a heartbeat with the database's clock every third of its timeout. The
liveness rule (the lock held *and* the heartbeat fresh) is written once, in
``_postgres_schema.py``; this module only joins, beats and reads.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from attrs import define

from ..._clock import Clock
from .._errors import JournalError
from ._postgres_connection import Database
from ._postgres_schema import FRESH, HOLDINGS, LOCK_CLASS, SCHEMA, SCHEMA_VERSION

if TYPE_CHECKING:
    from psycopg import AsyncConnection


@define(frozen=True)
class LiveWorker:
    """A worker of a shared job that is alive now, and how many rows it holds."""

    id: int
    host: str
    pid: int
    started_at: datetime
    holds: int


@define(frozen=True)
class Membership:
    """A worker's place in its job: the job's UUID and the worker's id."""

    job_id: str
    worker: int


async def find_job(connection: AsyncConnection[Any], job: str) -> str | None:
    """The UUID of `job`, or None when the database holds no such job (or no tables)."""
    tables = await connection.execute("SELECT to_regclass('worldrouter_jobs') IS NOT NULL")
    if await tables.fetchone() != (True,):
        return None
    found = await (
        await connection.execute("SELECT id FROM worldrouter_jobs WHERE name = %s", (job,))
    ).fetchone()
    return None if found is None else str(found[0])


async def existing_job(connection: AsyncConnection[Any], job: str, where: str) -> str:
    """The UUID of `job`, which must be in the database already (`JournalError` if not)."""
    found = await find_job(connection, job)
    if found is None:
        raise JournalError(
            f"no job {job!r} in the journal at {where}; pass the --job that batch ran with "
            "(its default is the input file's name without extension)"
        )
    return found


async def join(
    connection: AsyncConnection[Any], job: str, *, timeout: float, where: str
) -> Membership:
    """Create the tables on first use, the job if new, and this worker, holding its lock."""
    await connection.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
    await connection.execute(SCHEMA)
    found = await (
        await connection.execute("SELECT value FROM worldrouter_meta WHERE name = 'schema_version'")
    ).fetchone()
    if found is None or found[0] != SCHEMA_VERSION:
        raise JournalError(
            f"the journal tables in {where} have schema version {found and found[0]}, this "
            f"worldrouter-async reads version {SCHEMA_VERSION}: upgrade worldrouter-async "
            "(every worker of a job runs the same version)"
        )
    await connection.execute(
        "INSERT INTO worldrouter_jobs (name) VALUES (%s) ON CONFLICT DO NOTHING", (job,)
    )
    job_id = await find_job(connection, job)
    assert job_id is not None
    worker = await (
        await connection.execute(
            "INSERT INTO worldrouter_workers (job, host, pid, timeout_s)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (job, socket.gethostname(), os.getpid(), timeout),
        )
    ).fetchone()
    assert worker is not None
    # Taken inside the transaction that adds the worker: nobody sees it without its lock.
    await connection.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, worker[0]))
    return Membership(job_id, worker[0])


#: Leaving a job: the worker's row goes, and its rows' owner becomes NULL.
LEAVE = "DELETE FROM worldrouter_workers WHERE id = %s"


async def beat(database: Database, worker: int, *, timeout: float, clock: Clock) -> None:
    """Renew the worker's lease every third of its timeout, until it lapses.

    A renewal that fails (a statement cancelled, a lock wait cut off) is tried again at the
    next beat: one failed renewal must not cost the worker its rows. A connection that is
    gone stays failing, and the run's next write reports it.
    """
    while True:
        await clock.sleep_until(clock.now() + timeout / 3)
        try:
            renewed = await database.execute(
                f"UPDATE worldrouter_workers SET heartbeat = now() WHERE id = %s AND {FRESH}",  # noqa: S608
                (worker,),
            )
        except JournalError:
            continue
        if renewed != 1:
            return  # lapsed: the rows may be another worker's; mark_submitting refuses


async def live_workers(database: Database, job: str) -> list[LiveWorker]:
    """The job's live workers and the rows each holds, oldest first."""
    return [LiveWorker(*values) for values in await database.fetch(HOLDINGS, {"job": job})]
