"""HTTP to the WorldRouter API: auth, bounded requests, outage and rate-limit pauses, status
mapping and retries.

The aiohttp client comes from `_client.Network` (proxy, TLS trust), which also maps
connection failures; what is worth retrying is decided in `_retries`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from cattrs.errors import BaseValidationError
from yarl import URL

from ._breaker import OUTAGE_STATUSES, Breaker
from ._client import (
    Network,
    Proxy,
    fits_declared_length,
    proxy_options,
    raise_connection_error,
    read_limited,
)
from ._clock import Clock
from ._config import Limits, RetryPolicy, Timeouts
from ._errors import (
    AmbiguousCreateError,
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TaskMismatchError,
    TaskNotFoundError,
)
from ._logs import logger
from ._retries import is_transient, retrying
from ._stats import Counters
from ._throttle import Throttle
from .models import ImageTask, converter

_SNIPPET: Final = 200
#: A task id no server will have: the breaker's probe GETs it and a 404 means "answering".
_PROBE_TASK_ID: Final = "imgtask_worldrouter_async_breaker_probe"


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


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), else None.

    Garbage and NaN give None (fall back to backoff); infinity is kept so the caller can
    refuse it; negative values and past dates become 0.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _parse_float(raw_ms)
        if seconds is not None:
            return max(seconds / 1000.0, 0.0)
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    seconds = _parse_float(raw)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _parse_float(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return None if math.isnan(value) else value


_STATUS_ERRORS: Final[dict[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def _status_error(
    status: int, reason: str | None, headers: Mapping[str, str], body: bytes
) -> APIStatusError:
    message, code = _error_details(body)
    if message is None:
        snippet = body[:_SNIPPET].decode("utf-8", "replace").strip()
        message = f"HTTP {status} {reason or ''}".rstrip() + (
            f" with a non-JSON body: {snippet!r}" if snippet else " with an empty body"
        )
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(
        message,
        status=status,
        code=code,
        request_id=headers.get("x-request-id"),
        retry_after=parse_retry_after(headers),
    )


def _error_details(body: bytes) -> tuple[str | None, str | None]:
    try:
        payload = json.loads(body)
    except ValueError:
        return None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return error["message"], code if isinstance(code, str) else None
    if isinstance(error, str):
        return error, None
    return None, None


def _decode_task(
    status: int, body: bytes, request_id: str | None, *, asked: str | None = None
) -> ImageTask:
    """The task an answer describes, checked against the request it answers.

    `asked` is the task id a poll asked about (None for a create): an answer about another
    task is refused, and one that leaves out its id is about the task asked for. A create's
    answer must carry an id, since that id is the only receipt for a task that may be billed.
    """
    if not body.strip():
        raise APIResponseError(
            f"HTTP {status} with an empty body; expected a JSON image task",
            status=status,
            request_id=request_id,
        )
    try:
        payload = json.loads(body)
    except ValueError as exc:
        snippet = body[:_SNIPPET].decode("utf-8", "replace")
        raise APIResponseError(
            f"HTTP {status} with a body that is not JSON: {snippet!r}",
            status=status,
            request_id=request_id,
        ) from exc
    if isinstance(payload, dict):
        payload["request_id"] = request_id  # the header's, never a body field's
        if payload.get("id") is None and payload.get("task_id") is None:
            if asked is None:
                raise APIResponseError(
                    f"HTTP {status}: the create's answer carries no task id ('id' or "
                    "'task_id'), so the task it may have created cannot be tracked",
                    status=status,
                    request_id=request_id,
                )
            payload["id"] = asked
    try:
        task = converter.structure(payload, ImageTask)
    except (BaseValidationError, TypeError, KeyError, ValueError) as exc:
        about = f" of task {asked}" if asked is not None else ""
        raise APIResponseError(
            f"HTTP {status}: the answer{about} is JSON but not an image task ({exc})",
            status=status,
            request_id=request_id,
        ) from exc
    if asked is not None:
        _check_about(task, asked, status)
    return task


def _check_about(task: ImageTask, asked: str, status: int) -> None:
    """Refuse an answer to a poll of `asked` that describes another task.

    The answer names its task as a create's does: by ``task_id``, else by ``id`` (the
    documented answers carry both, equal).
    """
    answered = task.task_id or task.id
    if answered != asked:
        raise TaskMismatchError(
            f"HTTP {status}: the poll of task {asked} was answered about task {answered} "
            f"(status {task.status!r}), so the answer is not believed; a gateway, cache or "
            "replica mixed answers up, and the task is asked about again",
            task_id=asked,
            answered_id=answered,
            status=status,
            request_id=task.request_id,
        )


def _is_retryable_create(exc: BaseException) -> bool:
    """A create is paid: retry only where the server cannot have created the task."""
    if isinstance(exc, APIStatusError):
        return exc.status in (429, 503)
    return isinstance(exc, APIConnectionError) and not exc.request_sent and is_transient(exc)


def _is_definite(exc: BaseException) -> bool:
    """True when the server certainly did not create the task (a 4xx other than 408, or a
    request that never left this process, such as one a proxy or TLS check stopped)."""
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    return isinstance(exc, APIStatusError) and 400 <= exc.status < 500 and exc.status != 408


class Transport:
    """One pooled aiohttp client per session, sending authenticated requests to one origin."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        timeouts: Timeouts,
        retry: RetryPolicy,
        limits: Limits,
        counters: Counters,
        clock: Clock,
        retry_ambiguous_creates: bool = False,
    ) -> None:
        self._tasks_url = base_url.rstrip("/") + "/images/generation_tasks"
        # Built per request, never as a session default: aiohttp would merge a default
        # Authorization header into requests to other origins (the image storage host).
        self._auth = {"Authorization": f"Bearer {api_key.reveal()}"}
        self._timeouts = timeouts
        self._retry = retry
        self._limits = limits
        self._counters = counters
        self._retry_ambiguous = retry_ambiguous_creates
        self._clock = clock
        self.throttle = Throttle(limits.requests_per_second, clock=clock)
        self.breaker = Breaker(
            clock,
            probe=self._probe,
            backoff=lambda number: retry.backoff(number, jitter=False),
            patience=retry.rate_limit_patience,
            counters=counters,
        )
        self._client: aiohttp.ClientSession | None = None
        self._create_client: aiohttp.ClientSession | None = None
        self._proxy: Proxy | None = None
        self._proxied: dict[str, Any] = {}
        self._bounded: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Transport {self._tasks_url!r}>"

    async def open(self, network: Network) -> None:
        """Create the pooled client from `network`; call once, from the event loop."""
        url = URL(self._tasks_url)
        self._proxy = network.proxy_for(url)
        if self._proxy is not None and url.scheme == "http":
            raise ConfigurationError(
                f"refusing to send the API key over plain http:// through the proxy "
                f"{self._proxy}: the proxy would read it. Use an https:// base URL, or add "
                f"{url.host} to NO_PROXY"
            )
        timeouts = self._timeouts
        # One timer per request: the total bounds pool waits, silence and trickles alike
        # (API answers are small), and sock_connect adds one only when a socket opens.
        bounded = aiohttp.ClientTimeout(total=timeouts.request, sock_connect=timeouts.connect)
        # Polls skip aiohttp's per-request timer: the poller's watchdog already abandons
        # each poll at `Timeouts.request`, with one timer for all of them.
        self._proxied = proxy_options(self._proxy)
        self._bounded = {**self._proxied, "timeout": bounded}
        self._client = network.client(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
            max_connections=self._limits.max_connections,
        )
        # Creates get their own pool, which hands out only connections idle for less than
        # `create_keepalive` (aiohttp checks the idle time when it reuses a connection):
        # a create must never race the server closing an idle keep-alive connection.
        self._create_client = network.client(
            timeout=bounded,
            max_connections=self._limits.max_connections,
            keepalive_timeout=timeouts.create_keepalive,
        )

    async def aclose(self) -> None:
        """Close the pools and release requests waiting out an outage; idempotent."""
        self.breaker.close()
        clients = (self._client, self._create_client)
        self._client = self._create_client = None
        for client in clients:
            if client is not None:
                await client.close()

    async def create(self, payload: Mapping[str, Any], *, idempotency_key: str) -> ImageTask:
        """Create a task, retrying only where no task can have been created.

        A failure after the request may have reached the server becomes
        `AmbiguousCreateError`, never a silent second (paid) create; with
        ``retry_ambiguous_creates`` such a create is first resent with the same key, which
        is safe only on a deployment that deduplicates creates by Idempotency-Key.
        """
        body = json.dumps(payload).encode()
        headers = {
            **self._auth,
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }

        async def attempt(number: int) -> ImageTask:
            status, body_out, request_id = await self._send(
                "POST",
                self._tasks_url,
                headers,
                body,
                number,
                client=self._create_client,
                options=self._proxied,
            )
            task = _decode_task(status, body_out, request_id)
            self._counters.creates += 1
            return task

        try:
            return await retrying(
                attempt,
                policy=self._retry,
                clock=self._clock,
                retryable=is_transient if self._retry_ambiguous else _is_retryable_create,
                on_retry=self._count_retry,
            )
        except APIError as exc:
            if _is_definite(exc) or _is_retryable_create(exc):
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
        url = self._task_url(task_id)
        return await retrying(
            lambda number: self._get_task(task_id, url, number, self._bounded),
            policy=self._retry,
            clock=self._clock,
            on_retry=self._count_retry,
        )

    async def poll(self, task_id: str) -> ImageTask:
        """One GET of a task for the poller, which reschedules failures and bounds each poll
        (its watchdog abandons a poll at `Timeouts.request`, one timer for every poll)."""
        return await self._get_task(task_id, self._task_url(task_id), 1, self._proxied)

    def _task_url(self, task_id: str) -> str:
        return f"{self._tasks_url}/{quote(task_id, safe='')}"

    async def _get_task(
        self, task_id: str, url: str, attempt: int, options: Mapping[str, Any]
    ) -> ImageTask:
        self._counters.polls += 1
        try:
            status, body, request_id = await self._send(
                "GET", url, self._auth, None, attempt, client=self._client, options=options
            )
        except NotFoundError as exc:
            raise TaskNotFoundError(
                f"task {task_id} was not found: {exc.message}; it may have expired, "
                "or belong to another API key or deployment",
                task_id=task_id,
                status=exc.status,
                code=exc.code,
                request_id=exc.request_id,
            ) from exc
        return _decode_task(status, body, request_id, asked=task_id)

    async def _probe(self) -> bool:
        """One GET that creates nothing: True once the API answers without 502/503/504."""
        client = self._client
        if client is None:
            return False
        url = f"{self._tasks_url}/{_PROBE_TASK_ID}"
        try:
            async with client.get(
                url, headers=self._auth, allow_redirects=False, **self._bounded
            ) as response:
                await response.read()
                return response.status not in OUTAGE_STATUSES
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.debug("outage probe failed: %s: %s", type(exc).__name__, exc)
            return False

    def _count_retry(self) -> None:
        self._counters.retries += 1

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        attempt: int,
        *,
        client: aiohttp.ClientSession | None,
        options: Mapping[str, Any],
    ) -> tuple[int, bytes, str | None]:
        """One request; `options` carry the proxy and, unless the caller bounds the request
        itself, a timeout."""
        if client is None:
            raise RuntimeError("the transport is not open; use 'async with Session(...)'")
        breaker = self.breaker
        if breaker.is_open:  # an outage: wait for a probe to get through
            await breaker.wait()
            if self._client is None:
                raise RuntimeError("the session closed while this request waited out an outage")
        epoch = breaker.epoch
        if self.throttle.holding:  # a coroutine per request only when it may have to wait
            await self.throttle.wait()
        debug = logger.isEnabledFor(logging.DEBUG)  # the clock is read only for the log line
        started = time.perf_counter() if debug else 0.0
        try:
            async with client.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                **options,
            ) as response:
                status, reason, response_headers = (
                    response.status,
                    response.reason,
                    response.headers,
                )
                cap = self._limits.max_response_bytes
                if fits_declared_length(response, cap):
                    content: bytes | None = await response.read()
                else:
                    content = await read_limited(response, cap)
        except (aiohttp.ClientError, TimeoutError) as exc:
            breaker.record_failure()
            if debug:
                self._log(method, url, f"failed ({type(exc).__name__})", started, attempt, None)
            raise_connection_error(
                exc,
                what=f"{method} {url}",
                proxy=self._proxy,
                timeouts=self._timeouts,
                deadline=self._timeouts.request,
            )
        if status in OUTAGE_STATUSES:
            breaker.record_failure()
        elif breaker.failures or not breaker.answered:
            breaker.record_success(epoch)
        if debug:
            request_id = response_headers.get("x-request-id")
            self._log(method, url, str(status), started, attempt, request_id)
        if content is None:
            raise APIResponseError(
                f"{method} {url} answered HTTP {status} with a body over "
                f"max_response_bytes={self._limits.max_response_bytes} (after decompression); "
                "raise Limits.max_response_bytes if such answers are expected",
                status=status,
                request_id=response_headers.get("x-request-id"),
            )
        if status >= 300:
            error = _status_error(status, reason, response_headers, content)
            if isinstance(error, RateLimitError):
                self._pause_for(error)
            else:
                self.throttle.record_success()
            raise error
        self.throttle.record_success()
        return status, content, response_headers.get("x-request-id")

    def _log(
        self,
        method: str,
        url: str,
        outcome: str,
        started: float,
        attempt: int,
        request_id: str | None,
    ) -> None:
        """The one debug line per request: never headers, so never the key."""
        logger.debug(
            "%s %s -> %s in %.1f ms (attempt %d, request id %s)",
            method,
            URL(url).path,
            outcome,
            (time.perf_counter() - started) * 1000,
            attempt,
            request_id or "-",
        )

    def _pause_for(self, error: RateLimitError) -> None:
        hint = error.retry_after
        if hint is None:
            hint = self._retry.backoff(1, jitter=False)
        elif not hint <= self._retry.max_retry_after:
            return
        if self.throttle.pause(hint):
            self._counters.rate_limit_pauses += 1
            logger.info("rate limited: pausing all requests for %.3fs", hint)
