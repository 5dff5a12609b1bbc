"""The PostgreSQL journal's tables, the liveness of its workers, and its locations.

Several jobs share one database (rows carry their job's name); the tables are created on
first use under a transaction-level advisory lock, so workers starting at once do not race,
and ``worldrouter_meta`` records the schema version. A worker is alive while it holds a
session-level advisory lock on its connection (PostgreSQL drops it the moment the
connection closes: a killed process, a terminated backend) *and* its heartbeat, stamped
with the database's own clock, is younger than its ``timeout_s``: a hung worker whose
connection stays open loses its rows too.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SCHEMA_VERSION: Final = "1"
#: The first key of every advisory lock the journal takes (the second is a worker's id, or
#: 0 for the schema lock): "WR" and a version, so other applications' locks do not collide.
LOCK_CLASS: Final = 0x5752_0001
URL_SCHEMES: Final = ("postgresql://", "postgres://")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS worldrouter_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO worldrouter_meta VALUES ('schema_version', '1') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS worldrouter_jobs (
    name TEXT PRIMARY KEY,
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS worldrouter_workers (
    id SERIAL PRIMARY KEY,
    job TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    run TEXT,
    timeout_s DOUBLE PRECISION NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS worldrouter_requests (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    position BIGINT NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    status TEXT,
    urls TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    digests TEXT NOT NULL DEFAULT '[]',
    usage TEXT,
    error TEXT,
    sends INTEGER NOT NULL DEFAULT 0,
    run TEXT,
    owner INTEGER REFERENCES worldrouter_workers (id) ON DELETE SET NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job, key)
);
CREATE INDEX IF NOT EXISTS worldrouter_requests_owner ON worldrouter_requests (owner);
CREATE TABLE IF NOT EXISTS worldrouter_invalid_lines (
    job TEXT NOT NULL,
    line INTEGER NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    journaled BOOLEAN NOT NULL,
    run TEXT NOT NULL,
    PRIMARY KEY (job, line, key)
);
"""

#: A worker row whose heartbeat is younger than its timeout, by the database's clock.
FRESH: Final = "heartbeat > now() - make_interval(secs => timeout_s)"

#: The ids of the job's live workers: lock held on an open connection, heartbeat fresh.
LIVE_WORKERS: Final = f"""
SELECT w.id FROM worldrouter_workers w
WHERE w.job = %(job)s
  AND w.{FRESH}
  AND EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = {LOCK_CLASS}::oid AND l.objid = w.id::oid
  )
"""  # noqa: S608 - a constant, no input

#: Forget the job's dead workers; their rows' owner becomes NULL (ON DELETE SET NULL). A
#: dead worker another live one is forgetting right now is skipped, never waited for, so
#: two workers pruning at once cannot deadlock.
PRUNE_DEAD: Final = f"""
DELETE FROM worldrouter_workers
WHERE id IN (
  SELECT id FROM worldrouter_workers
  WHERE job = %(job)s AND id NOT IN ({LIVE_WORKERS})
  FOR UPDATE SKIP LOCKED
)
"""  # noqa: S608 - a constant, no input

#: Forget the invalid lines of runs that no live worker of the job is doing.
FORGET_INVALID: Final = f"""
DELETE FROM worldrouter_invalid_lines
WHERE job = %(job)s
  AND run NOT IN (
    SELECT run FROM worldrouter_workers WHERE run IS NOT NULL AND id IN ({LIVE_WORKERS})
  )
"""  # noqa: S608 - a constant, no input

#: The job's live workers and how many rows each holds, oldest first.
HOLDINGS: Final = f"""
SELECT w.id, w.host, w.pid, w.started_at, count(r.key)
FROM worldrouter_workers w
LEFT JOIN worldrouter_requests r ON r.owner = w.id AND r.job = w.job
WHERE w.id IN ({LIVE_WORKERS})
GROUP BY w.id
ORDER BY w.started_at, w.id
"""  # noqa: S608 - a constant, no input


def is_postgres_url(location: object) -> bool:
    """True when `location` is a ``postgresql://`` (or ``postgres://``) URL, not a file."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """`url` without its password (in the user part or a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/")))


def secrets_of(url: str) -> list[str]:
    """The passwords `url` holds, to scrub from the messages of errors about it."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query, True) if k == "password" and v]
    return found
