"""The WorldRouter API over any `AsyncTransport`: endpoints, auth, outage and rate-limit
pauses, status mapping, decoding and retries.

`APIClient` builds each request (`WireRequest`), hands it to the transport, and reads the
answer (`_answers`); the breaker and the throttle wrap every send, and what is worth
retrying is decided in `_retries`. Each request answered or failed, each retry, each
create accepted and each 429 pause is reported to the session's `Hooks`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from yarl import URL

from ._answers import decode_task, status_error
from ._breaker import OUTAGE_STATUSES, Breaker
from ._clock import Clock
from ._config import Limits, RetryPolicy, Timeouts
from ._errors import (
    AmbiguousCreateError,
    APIConnectionError,
    APIError,
    APIResponseError,
    NotFoundError,
    RateLimitError,
    TaskNotFoundError,
)
from ._hooks import (
    Hooks,
    RateLimitPaused,
    RequestAnswered,
    RequestFailed,
    TaskCreated,
)
from ._retries import created_nothing, is_transient, may_retry_create, retrying
from ._throttle import Throttle
from ._transports.base import AsyncTransport, WireRequest, WireResponse
from .models import ImageTask

#: A task id no server will have: the breaker's probe GETs it and a 404 means "answering".
_PROBE_TASK_ID: Final = "imgtask_worldrouter_async_breaker_probe"
#: Poll requests kept at most; past it the cache starts again (tasks that ended without a
#: final answer, by timeout or cancellation, leave theirs behind until then).
_MAX_POLL_REQUESTS: Final = 16_384


class Secret:
    """An API key that never shows itself in a repr, str or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the Authorization header only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class APIClient:
    """The task endpoints of one API origin, sent authenticated through one transport."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        timeouts: Timeouts,
        retry: RetryPolicy,
        limits: Limits,
        hooks: Hooks,
        clock: Clock,
        retry_ambiguous_creates: bool = False,
    ) -> None:
        self.tasks_url: Final = base_url.rstrip("/") + "/images/generation_tasks"
        # Sent with each request, never as a client default: aiohttp would merge a default
        # Authorization header into requests to other origins (the image storage host).
        self._auth = {"Authorization": f"Bearer {api_key.reveal()}"}
        self._create_headers = {**self._auth, "Content-Type": "application/json"}
        self._timeouts = timeouts
        self._retry = retry
        self._max_body = limits.max_response_bytes
        self._hooks = hooks
        self._retry_ambiguous = retry_ambiguous_creates
        self._clock = clock
        self._tasks_endpoint = URL(self.tasks_url)
        #: Each pending task's poll, made (and its URL parsed) once: it never changes.
        self._polls: dict[str, WireRequest] = {}
        self.throttle = Throttle(limits.requests_per_second, clock=clock)
        self.breaker = Breaker(
            clock,
            probe=self._probe,
            backoff=lambda number: retry.backoff(number, jitter=False),
            patience=retry.rate_limit_patience,
            hooks=hooks,
        )
        self._wire: AsyncTransport | None = None

    def __repr__(self) -> str:
        return f"<APIClient {self.tasks_url!r}>"

    def open(self, transport: AsyncTransport) -> None:
        """Send every request through `transport` from now on; call once."""
        self._wire = transport

    async def aclose(self) -> None:
        """Close the transport and release requests waiting out an outage; idempotent."""
        self.breaker.close()
        wire, self._wire = self._wire, None
        if wire is not None:
            await wire.aclose()

    async def create(self, payload: Mapping[str, Any], *, idempotency_key: str) -> ImageTask:
        """Create a task, retrying only where no task can have been created.

        A failure after the request may have reached the server becomes
        `AmbiguousCreateError`, never a silent second (paid) create; with
        ``retry_ambiguous_creates`` such a create is first resent with the same key, which
        is safe only on a deployment that deduplicates creates by Idempotency-Key.
        """
        request = WireRequest(
            "POST",
            self._tasks_endpoint,
            {**self._create_headers, "Idempotency-Key": idempotency_key},
            json.dumps(payload).encode(),
            paid=True,
            timeout=self._timeouts.request,
            max_body=self._max_body,
        )

        async def attempt(number: int) -> ImageTask:
            response, request_id = await self._send(request, number)
            task = decode_task(response.status, response.body or b"", request_id)
            self._hooks.emit(TaskCreated(task))
            return task

        try:
            return await retrying(
                attempt,
                policy=self._retry,
                clock=self._clock,
                retryable=is_transient if self._retry_ambiguous else may_retry_create,
                hooks=self._hooks,
            )
        except APIError as exc:
            if created_nothing(exc) or may_retry_create(exc):
                raise
            resent = "; it was resent with the same key" if self._retry_ambiguous else ""
            raise AmbiguousCreateError(
                f"the create may have reached the server before it failed ({exc}){resent}. "
                f"Resending it with idempotency_key={idempotency_key!r} is safe only if your "
                "deployment deduplicates creates by Idempotency-Key; otherwise a resend may "
                "create and bill a second task",
                idempotency_key=idempotency_key,
            ) from exc

    async def retrieve(self, task_id: str) -> ImageTask:
        """Fetch a task's current state, retrying transient failures; each try is bounded
        by `Timeouts.request`."""
        request = self._get(self._task_url(task_id), timeout=self._timeouts.request)
        return await retrying(
            lambda number: self._get_task(task_id, request, number),
            policy=self._retry,
            clock=self._clock,
            hooks=self._hooks,
        )

    async def poll(self, task_id: str) -> ImageTask:
        """One GET of a task for the poller, which reschedules failures and bounds each poll
        (its watchdog abandons a poll at `Timeouts.request`, one timer for every poll)."""
        request = self._polls.get(task_id)
        if request is None:
            if len(self._polls) >= _MAX_POLL_REQUESTS:
                self._polls.clear()
            request = self._polls[task_id] = self._get(self._task_url(task_id), timeout=None)
        task = await self._get_task(task_id, request, 1)
        if task.is_terminal:
            self._polls.pop(task_id, None)
        return task

    def _task_url(self, task_id: str) -> str:
        return f"{self.tasks_url}/{quote(task_id, safe='')}"

    def _get(self, url: str, *, timeout: float | None) -> WireRequest:
        return WireRequest("GET", url, self._auth, timeout=timeout, max_body=self._max_body)

    async def _get_task(self, task_id: str, request: WireRequest, attempt: int) -> ImageTask:
        try:
            response, request_id = await self._send(request, attempt)
        except NotFoundError as exc:
            self._polls.pop(task_id, None)
            raise TaskNotFoundError(
                f"task {task_id} was not found: {exc.message}; it may have expired, "
                "or belong to another API key or deployment",
                task_id=task_id,
                status=exc.status,
                code=exc.code,
                request_id=exc.request_id,
            ) from exc
        return decode_task(response.status, response.body or b"", request_id, asked=task_id)

    async def _probe(self) -> bool:
        """One GET that creates nothing: True once the API answers without 502/503/504."""
        wire = self._wire
        if wire is None:
            return False
        request = self._get(f"{self.tasks_url}/{_PROBE_TASK_ID}", timeout=self._timeouts.request)
        started = time.perf_counter()
        try:
            response = await wire.send(request)
        except APIConnectionError as exc:
            elapsed = time.perf_counter() - started
            self._hooks.emit(RequestFailed(request, exc, 1, elapsed, probe=True))
            return False
        request_id = response.headers.get("x-request-id")
        elapsed = time.perf_counter() - started
        self._hooks.emit(
            RequestAnswered(request, response.status, 1, request_id, elapsed, probe=True)
        )
        return response.status not in OUTAGE_STATUSES

    async def _send(self, request: WireRequest, attempt: int) -> tuple[WireResponse, str | None]:
        """One request through the breaker and the throttle; the answer if it is a success
        with a body within `max_response_bytes`, with its request id, else our error."""
        wire = self._wire
        if wire is None:
            raise RuntimeError("the transport is not open; use 'async with Session(...)'")
        breaker = self.breaker
        if breaker.is_open:  # an outage: wait for a probe to get through
            await breaker.wait()
            if self._wire is None:
                raise RuntimeError("the session closed while this request waited out an outage")
        epoch = breaker.epoch
        if self.throttle.holding:  # a coroutine per request only when it may have to wait
            await self.throttle.wait()
        started = time.perf_counter()
        try:
            response = await wire.send(request)
        except APIConnectionError as exc:
            breaker.record_failure()
            self._hooks.emit(RequestFailed(request, exc, attempt, time.perf_counter() - started))
            raise
        status = response.status
        if status in OUTAGE_STATUSES:
            breaker.record_failure()
        elif breaker.failures or not breaker.answered:
            breaker.record_success(epoch)
        request_id = response.headers.get("x-request-id")
        elapsed = time.perf_counter() - started
        self._hooks.emit(RequestAnswered(request, status, attempt, request_id, elapsed))
        if response.body is None:
            raise APIResponseError(
                f"{request.method} {request.url} answered HTTP {status} with a body over "
                f"max_response_bytes={self._max_body} (after decompression); "
                "raise Limits.max_response_bytes if such answers are expected",
                status=status,
                request_id=request_id,
            )
        if status >= 300:
            error = status_error(status, response.reason, response.headers, response.body)
            if isinstance(error, RateLimitError):
                self._pause_for(error)
            else:
                self.throttle.record_success()
            raise error
        self.throttle.record_success()
        return response, request_id

    def _pause_for(self, error: RateLimitError) -> None:
        hint = error.retry_after
        if hint is None:
            hint = self._retry.backoff(1, jitter=False)
        elif not hint <= self._retry.max_retry_after:
            return
        if self.throttle.pause(hint):
            self._hooks.emit(RateLimitPaused(hint, error))
