"""One worker's connection to a PostgreSQL journal: connecting, transactions, scrubbed errors.

`Database` owns the connection: it connects with keepalives tuned to the worker timeout (so a
lost client or server is noticed within about that time), runs each piece of work in one
transaction alone on the connection and shielded from cancellation, and turns every driver
error into a `JournalError` with the URL's passwords removed. psycopg is imported only when
a connection opens, so the base install works without the ``postgres`` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from .._errors import JournalError
from ._postgres_schema import redact, secrets_of

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_T = TypeVar("_T")
#: Seconds a statement may run before PostgreSQL cancels it (claims never wait on locks).
STATEMENT_TIMEOUT: Final = 60.0
_EXTRA: Final = 'pip install "worldrouter-async[postgres]"'


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


class Database:
    """A connection to the journal's database, used by one worker, one transaction at a time.

    Args:
        url: ``postgresql://...``; its passwords never reach a message.
        name: the journal as messages name it (the URL without password, and the job).
        timeout: the worker timeout, which the connection's keepalives follow.
    """

    def __init__(self, url: str, *, name: str, timeout: float) -> None:
        self._url = url
        self._name = name
        self._timeout = timeout
        self._connection: AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()

    @property
    def is_open(self) -> bool:
        """True between `connect` and `close`."""
        return self._connection is not None

    async def connect(self) -> None:
        """Open the connection (`JournalError` when the driver or the server is missing)."""
        self._connection = await _connect(self._url, timeout=self._timeout)

    async def close(self, *, last: str | None = None, params: Sequence[Any] = ()) -> None:
        """Run `last` if given (best effort, even when cancelled), then disconnect."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with anyio.CancelScope(shield=True):
            if last is not None:
                with contextlib.suppress(Exception):  # closing undoes what it would
                    await connection.execute(last, params)
            await connection.close()

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        """Run `work` in one transaction, alone on the connection, to its end even when
        cancelled (a statement cut off midway would leave the connection unusable)."""

        async def in_transaction(connection: AsyncConnection[Any]) -> _T:
            async with connection.transaction():
                return await work(connection)

        return await self._use(in_transaction)

    async def _use(self, work: Callable[[AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        """Run `work` alone on the connection, to its end even when cancelled; a driver
        error becomes `JournalError` without the password.

        Without `run`'s transaction, one statement on the autocommit connection is its own
        transaction, committed before it answers, in one round trip instead of three.
        """
        import psycopg  # loaded by `connect` already

        connection = self._connection
        if connection is None:
            raise JournalError(f"the journal {self._name} is closed")
        with anyio.CancelScope(shield=True):
            async with self._lock:
                try:
                    done = await work(connection)
                except psycopg.Error as exc:
                    raise _scrubbed(
                        f"cannot use the journal {self._name}; the run stopped and everything "
                        "recorded so far is kept: rerun once the database is reachable",
                        exc,
                        self._url,
                    ) from None
        return done

    async def execute(self, statement: str, params: Sequence[Any] | dict[str, Any]) -> int:
        """Run one statement (its own transaction); the number of rows it touched."""

        async def write(connection: AsyncConnection[Any]) -> int:
            return (await connection.execute(statement, params)).rowcount

        return await self._use(write)

    async def execute_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of `rows`, all in one transaction."""

        async def write(connection: AsyncConnection[Any]) -> None:
            async with connection.cursor() as cursor:
                await cursor.executemany(statement, rows)

        await self.run(write)

    async def fetch(
        self, statement: str, params: Sequence[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Every row one query returns."""

        async def read(connection: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await (await connection.execute(statement, params)).fetchall()

        return await self._use(read)
