"""The create workers of a bulk run: each commits `submitting`, sends one create, and
journals its answer, stopping the run when the key is refused or the server is unreachable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .._errors import (
    AmbiguousCreateError,
    APIConnectionError,
    AuthenticationError,
    CreateHeldBackError,
    PermissionDeniedError,
    WorldRouterError,
)
from .._handles import TaskHandle
from .._retries import is_final
from .._session import Session
from .._submit import start_create_workers
from ._finish import Finished
from ._outcomes import Source
from .journal import JournalRow, JournalStore, State

#: Creates that fail to connect in a row before the run stops sending creates.
CONNECTION_FAILURES_TO_STOP: Final = 5
WORKER_NAME: Final = "worldrouter-async batch create"
NOT_SENT: Final = "not sent: the run had stopped sending creates; a rerun sends it"


class CreateWorkers:
    """Sends the creates of a run, `concurrency` workers reading one stream of rows.

    Args:
        session: the session that sends the creates.
        store: the journal; `mark_submitting` is committed before each create is sent.
        timeout: seconds each created task is tracked for (None: the session's default).
        deliver: called with each row the workers are done with (answered or not sent).
        watch: called with each row whose create answered, and its handle.
        stop: called with the reason when the run must stop sending creates.
        stopped: True once the run stopped sending creates.
    """

    def __init__(
        self,
        session: Session,
        store: JournalStore,
        *,
        timeout: float | None,
        deliver: Callable[[Finished], None],
        watch: Callable[[JournalRow, TaskHandle, Source], None],
        stop: Callable[[str], None],
        stopped: Callable[[], bool],
    ) -> None:
        self._session = session
        self._store = store
        self._timeout = timeout
        self._deliver = deliver
        self._watch = watch
        self._stop = stop
        self._stopped = stopped
        self._connection_failures = 0
        self._in_flight: set[anyio.CancelScope] = set()

    def give_grace(self, seconds: float) -> None:
        """Let creates in flight get their answer for up to `seconds` more, then cut them off."""
        for shield in self._in_flight:
            shield.deadline = anyio.current_time() + seconds

    def start(
        self, task_group: TaskGroup, workers: int, rows: MemoryObjectReceiveStream[JournalRow]
    ) -> None:
        """Start `workers` create workers in `task_group`, reading `rows` until it ends: the
        session's one bounded create pool (`start_create_workers`), as `submit_many` uses."""

        async def take() -> JournalRow | None:
            try:
                return await rows.receive()
            except anyio.EndOfStream:
                return None

        start_create_workers(task_group, workers, take, self._take_row, name=WORKER_NAME)

    async def _take_row(self, row: JournalRow) -> None:
        if self._stopped():
            self._deliver(Finished(row, Source.JOURNAL, note=NOT_SENT))
        else:
            await self._create(row)

    async def _create(self, row: JournalRow) -> None:
        # A create cut off mid-flight leaves a row nobody can settle without risking a second
        # payment, so an interrupted run lets creates in flight get their answer (and records
        # it) for a grace period; see `give_grace`.
        with anyio.CancelScope(shield=True) as shield:
            self._in_flight.add(shield)
            try:
                await self._send_create(row)
            finally:
                self._in_flight.discard(shield)

    async def _send_create(self, row: JournalRow) -> None:
        source = Source.RESUBMITTED if row.state == State.SUBMITTING else Source.NEW
        await self._store.mark_submitting(row.key)  # committed before the create is sent
        try:
            handle = await self._session.submit_request(
                row.request,
                timeout=self._timeout,
                idempotency_key=row.idempotency_key,
                reported=True,
            )
        except AmbiguousCreateError as exc:  # stays SUBMITTING: see retry_ambiguous_creates
            await self._store.mark_ambiguous(row.key, str(exc))
            self._count_unanswered(exc)
            self._deliver(Finished(row, source, error=exc))
            return
        except WorldRouterError as exc:
            # Refused for good (400, 413, 422, strict mode) is final; anything else (429,
            # 503, no connection, a bad key) certainly created nothing: a rerun sends it.
            if is_final(exc):
                await self._store.mark_failed(row.key, str(exc))
            else:
                await self._store.mark_pending(row.key, str(exc))
            if isinstance(exc, AuthenticationError | PermissionDeniedError):
                self._stop(f"the server refused the API key: {exc}")
            elif isinstance(exc, CreateHeldBackError):
                self._stop(
                    f"the server refused a create ({exc.refusal}) for a reason every other "
                    "create shares, so no other was sent; fix its cause and rerun"
                )
            self._count_unanswered(exc)
            self._deliver(Finished(row, source, error=exc))
            return
        self._count_unanswered(None)
        await self._store.mark_created(row.key, handle.task_id, handle.status)
        self._watch(row, handle, source)

    def _count_unanswered(self, exc: WorldRouterError | None) -> None:
        """Count creates in a row that got no answer at all; any answer resets the count."""
        if not isinstance(exc, APIConnectionError) and not isinstance(
            getattr(exc, "__cause__", None), APIConnectionError
        ):
            self._connection_failures = 0
            return
        self._connection_failures += 1
        if self._connection_failures >= CONNECTION_FAILURES_TO_STOP:
            self._stop(
                f"{self._connection_failures} creates in a row could not reach the server "
                f"(last: {exc}); check the network and the base URL"
            )
