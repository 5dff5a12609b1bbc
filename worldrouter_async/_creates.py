"""The session's one create path: slow start, and no paid task lost to a cancelled caller.

Slow start: until one create of the session gets a task back, creates go one at a time, so
a wrong key, model or URL costs one request however many are queued; a failed create lets
the next one try alone. Once the server has refused the session's API key (401), later
creates are refused at once without being sent: a session's key cannot change.

No lost task: each create runs in a task of its own, owned by `Creates` and ended by
`Creates.aclose`. A caller cancelled while its create waits its turn sends nothing; one
cancelled after the create was sent returns at once, and the create's answer, when it
arrives, is recorded as an `AbandonedTask` (or, if it never arrives, its idempotency key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Final, Protocol

from attrs import define

from ._errors import (
    AmbiguousCreateError,
    APIStatusError,
    AuthenticationError,
    CreateHeldBackError,
    WorldRouterError,
)
from .models import ImageRequest, ImageTask

logger: Final = logging.getLogger("worldrouter_async")

#: How many `AbandonedTask` records a session keeps (the most recent ones).
ABANDONED_LIMIT: Final = 10_000

#: Real seconds a closing session lets its creates end by themselves before cancelling them.
CLOSE_GRACE: Final = 0.1

CUT_OFF: Final = "its caller was cancelled while the create was in flight"


class SendCreate(Protocol):
    """The transport's create: one paid request, retried only where nothing was created."""

    def __call__(
        self, payload: Mapping[str, Any], /, *, idempotency_key: str
    ) -> Awaitable[ImageTask]: ...


@define(frozen=True)
class AbandonedTask:
    """A task created for a caller that was cancelled, or left early, before it got the handle.

    The task may still run on the server, and it is billed: ``Session.track(task_id)`` gets
    its result. Its tracking stopped when its caller left. When `task_id` is None, the
    create was cut off before its answer arrived: the server may or may not have created
    the task, and `idempotency_key` is what the create was sent with (resend with it only if
    your deployment deduplicates creates by Idempotency-Key). Listed in `Session.abandoned`.

    Attributes:
        task_id: the server's task ID, or None when the create's answer never arrived.
        idempotency_key: the create's ``Idempotency-Key``, when known.
        status: the last status seen from the server (None if none was seen).
        request: the request the task was created from.
        reason: why no caller got the handle, such as ``"submit_many was cancelled"``.
        time: wall-clock time it was recorded (``time.time()``).
    """

    task_id: str | None
    idempotency_key: str | None
    status: str | None
    request: ImageRequest | None
    reason: str
    time: float

    @property
    def ambiguous(self) -> bool:
        """True when the create was cut off mid-flight, so the task may not exist."""
        return self.task_id is None


class AbandonedLog:
    """The bounded record of abandoned tasks, and one WARNING line per group of them."""

    def __init__(self, limit: int = ABANDONED_LIMIT) -> None:
        self._records: deque[AbandonedTask] = deque(maxlen=limit)

    def snapshot(self) -> tuple[AbandonedTask, ...]:
        """The records kept, oldest first."""
        return tuple(self._records)

    def add(self, records: Iterable[AbandonedTask]) -> None:
        """Keep `records` and log the task ids (or idempotency keys) they name."""
        records = list(records)
        if not records:
            return
        self._records.extend(records)
        ids = [record.task_id for record in records if record.task_id is not None]
        keys = [record.idempotency_key or "?" for record in records if record.task_id is None]
        if ids:
            logger.warning(
                "%d task(s) abandoned (%s): no handle reached a caller, so they are no longer "
                "tracked; they may still run and are billed. Session.track(task_id) gets a "
                "result; Session.abandoned lists them: %s",
                len(ids),
                records[0].reason,
                ", ".join(ids),
            )
        if keys:
            logger.warning(
                "%d create(s) cut off mid-flight (%s) may have created a task; their "
                "idempotency keys (listed in Session.abandoned): %s",
                len(keys),
                records[0].reason,
                ", ".join(keys),
            )


class _Flight:
    """One create: its request, key, answer, and whether it was sent or abandoned."""

    __slots__ = ("abandoned", "answer", "key", "request", "sent")

    def __init__(self, request: ImageRequest, key: str) -> None:
        self.request = request
        self.key = key
        self.answer: asyncio.Future[ImageTask] = asyncio.get_running_loop().create_future()
        self.sent = False
        self.abandoned = False


class Creates:
    """Sends one session's creates: the first alone, then concurrently after a success.

    `send` is the transport's create; `log` records answers no caller is left to take.
    """

    def __init__(self, send: SendCreate, log: AbandonedLog) -> None:
        self._send_create = send
        self._log = log
        self._opened = False  # a create has got a task back: no more one at a time
        self._probe = asyncio.Lock()
        self._refusal: AuthenticationError | None = None
        self._refused_models: dict[str, APIStatusError] = {}
        self._refused_url: APIStatusError | None = None
        self._flights: set[asyncio.Task[None]] = set()

    async def create(self, request: ImageRequest, idempotency_key: str) -> ImageTask:
        """Create `request` once; if the caller is cancelled, its answer is still recorded."""
        flight = _Flight(request, idempotency_key)
        runner = asyncio.get_running_loop().create_task(
            self._fly(flight), name=f"worldrouter-async create {idempotency_key}"
        )
        self._flights.add(runner)
        # The caller waits on the answer itself, not through `asyncio.shield`: cancelling
        # the caller cancels only `flight.answer`, never the runner, and saves a future and
        # two loop callbacks on every create.
        try:
            return await flight.answer
        except asyncio.CancelledError:  # the create goes on; its answer will be recorded
            self._abandon(flight, runner)
            raise

    async def aclose(self) -> None:
        """End every create still running (their callers get an error, or a record is kept).

        Call it once the transport is closed: creates on the wire or waiting out an outage
        then end by themselves at once, with the error that says what happened to them;
        only what is left after `CLOSE_GRACE` (a rate-limit pause, a retry's backoff) is
        cancelled, and counted as possibly created.
        """
        runners = list(self._flights)
        if not runners:
            return
        _, left = await asyncio.wait(runners, timeout=CLOSE_GRACE)
        for runner in left:
            runner.cancel()
        if left:
            await asyncio.wait(left)

    async def _fly(self, flight: _Flight) -> None:
        try:
            # Once a create has worked there is no gate: no extra coroutine per create.
            task = await (self._send(flight) if self._opened else self._gated(flight))
        except asyncio.CancelledError:  # the session is closing (or the caller left early)
            self._settle(flight, None, _cut_off(flight))
            raise
        except Exception as exc:  # handed to the caller through `flight.answer`
            self._settle(flight, None, exc)
        else:
            self._settle(flight, task, None)
        finally:
            # Here rather than in a done-callback: one loop callback less per create.
            self._flights.discard(asyncio.current_task())

    async def _gated(self, flight: _Flight) -> ImageTask:
        async with self._probe:  # one create at a time until one gets a task back
            if not self._opened:
                task = await self._send(flight)
                self._opened = True
                return task
        return await self._send(flight)

    async def _send(self, flight: _Flight) -> ImageTask:
        if self._refusal is not None:
            raise _refused_again(self._refusal)
        if refusal := self._refused_url or self._refused_models.get(flight.request.model):
            raise _held_back(refusal)
        flight.sent = True
        try:
            return await self._send_create(flight.request.to_payload(), idempotency_key=flight.key)
        except AuthenticationError as exc:
            self._refusal = exc  # the key is the session's: every later create would fail
            raise
        except APIStatusError as exc:
            self._remember(flight.request, exc)
            raise

    def _remember(self, request: ImageRequest, refusal: APIStatusError) -> None:
        """Remember a refusal about the session rather than the request, so that creates
        like it are not sent: a wrong model or URL then costs one request, not one each."""
        if 400 <= refusal.status < 500 and "model" in (refusal.code or ""):
            self._refused_models[request.model] = refusal
        elif refusal.status == 404 and not self._opened:  # no create ever worked: the URL
            self._refused_url = refusal

    def _settle(self, flight: _Flight, task: ImageTask | None, error: Exception | None) -> None:
        # A cancelled answer means its caller was cancelled while waiting, and may not yet
        # have run its `_abandon`: the answer is recorded now either way.
        if not flight.abandoned and not flight.answer.cancelled():
            if error is None:
                assert task is not None
                flight.answer.set_result(task)
            else:
                flight.answer.set_exception(error)
            return
        flight.abandoned = True
        self._record(flight, task, error)

    def _abandon(self, flight: _Flight, runner: asyncio.Task[None]) -> None:
        answer = flight.answer
        if flight.abandoned:  # the runner ended after the caller's cancellation, and recorded
            return
        flight.abandoned = True
        if answer.done() and not answer.cancelled():  # answered just as its caller was cancelled
            error = answer.exception()
            self._record(flight, None if error is not None else answer.result(), error)
        elif not flight.sent:  # still waiting its turn: nothing was sent, nothing to record
            runner.cancel()
            self._flights.discard(runner)  # it may end before `_fly` ever runs

    def _record(self, flight: _Flight, task: ImageTask | None, error: BaseException | None) -> None:
        if task is not None:
            record_id: str | None = task.task_id or task.id
            status: str | None = task.status
        elif flight.sent and _may_have_created(error):
            record_id = status = None
        else:
            return
        self._log.add(
            [AbandonedTask(record_id, flight.key, status, flight.request, CUT_OFF, time.time())]
        )


def _may_have_created(error: BaseException | None) -> bool:
    """False only for an error that proves the server created nothing."""
    return isinstance(error, AmbiguousCreateError) or not isinstance(error, WorldRouterError)


def _cut_off(flight: _Flight) -> Exception:
    """What the caller of a create ended by the session closing gets."""
    if not flight.sent:
        return RuntimeError("the session closed before this create was sent; nothing was created")
    return AmbiguousCreateError(
        "the session closed while the create was in flight, so it may have reached the "
        f"server. Resending it with idempotency_key={flight.key!r} is safe only if your "
        "deployment deduplicates creates by Idempotency-Key",
        idempotency_key=flight.key,
    )


def _held_back(refusal: APIStatusError) -> CreateHeldBackError:
    return CreateHeldBackError(
        f"not sent: the server refused an earlier create of this session ({refusal}), and "
        "would refuse this one for the same reason (its model, or the base URL), so a wrong "
        "model or URL costs one request, not one per request. Nothing was created; fix the "
        "cause and submit it again",
        refusal=refusal,
    )


def _refused_again(refusal: AuthenticationError) -> AuthenticationError:
    return AuthenticationError(
        "not sent: the server refused this session's API key on an earlier create "
        f"({refusal.message}); a session's key cannot change, so open a new Session with a "
        "valid key",
        status=refusal.status,
        code=refusal.code,
    )
