"""HTTP to the WorldRouter API: auth, bounded requests, status mapping and retries.

The aiohttp client comes from `_client.Network` (proxy, TLS trust), which also maps
connection failures; what is worth retrying is decided in `_retries`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
from cattrs.errors import BaseValidationError
from yarl import URL

from ._client import (
    Network,
    Proxy,
    fits_declared_length,
    proxy_options,
    raise_connection_error,
    read_limited,
)
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
    TaskNotFoundError,
)
from ._logs import logger
from ._retries import is_transient, retrying
from ._stats import Counters
from .models import ImageTask, converter

_SNIPPET: Final = 200
_RATE_WINDOW: Final = 2.0  # seconds of accepted requests behind the adaptive rate estimate
_BACK_OFF: Final = 0.95  # after a 429, pace at this fraction of the rate just granted
_T = TypeVar("_T")


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


class Throttle:
    """Holds every request of a session while a 429 pause lasts, and paces to a rate.

    One pause for everyone is what stops a thundering herd: after a 429 no request goes out
    until its Retry-After has passed, whichever coroutine hit it. Without a configured rate,
    a 429 also turns on pacing at 95% of the rate the server was just granting, which then
    grows by 10% for every second without a 429 (additive-increase, multiplicative-decrease
    in spirit), so a saturated session settles just under the server's limit.
    """

    __slots__ = (
        "_configured",
        "_interval",
        "_last_raise",
        "_next_slot",
        "_successes",
        "paused_until",
    )

    def __init__(self, requests_per_second: float | None) -> None:
        self._configured = requests_per_second
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_slot = 0.0
        self._successes: deque[float] = deque()
        self._last_raise = 0.0
        self.paused_until = 0.0

    @property
    def rate(self) -> float | None:
        """The requests per second being paced to now, or None when not pacing."""
        return 1.0 / self._interval if self._interval else None

    @property
    def paused(self) -> bool:
        """True while a 429 pause is in force."""
        return self.paused_until > time.monotonic()

    @property
    def holding(self) -> bool:
        """True while requests must wait (a 429 pause or pacing); checked before `wait`."""
        return bool(self._interval) or self.paused

    async def wait_unpaused(self) -> None:
        """Return once no 429 pause is in force."""
        # A loop, not an Event: a later 429 may extend the pause while we sleep.
        while (delay := self.paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await anyio.sleep(delay)

    async def wait(self) -> None:
        """Return when a request may be sent (at once when neither paused nor paced)."""
        await self.wait_unpaused()
        if self._interval:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
            if slot > now:
                await anyio.sleep(slot - now)

    def record_success(self) -> None:
        """Note a request the server accepted (the rate estimate behind adaptive pacing)."""
        if self._configured is not None and self._interval == 1.0 / self._configured:
            return
        now = time.monotonic()
        successes = self._successes
        successes.append(now)
        while successes[0] < now - _RATE_WINDOW:
            successes.popleft()
        if self._interval and now - self._last_raise >= 1.0:
            self._last_raise = now
            self._set_rate(1.1 / self._interval)

    def pause(self, seconds: float) -> bool:
        """Hold all requests for `seconds`, slow down; True when this extends the pause."""
        now = time.monotonic()
        if len(self._successes) >= 2:
            granted = len(self._successes) / max(now - self._successes[0], 1e-3)
            if not self._interval or granted * _BACK_OFF < 1.0 / self._interval:
                self._set_rate(granted * _BACK_OFF)
            self._last_raise = now
        until = now + seconds
        if until <= self.paused_until:
            return False
        self.paused_until = until
        return True

    def _set_rate(self, rate: float) -> None:
        if self._configured is not None:
            rate = min(rate, self._configured)
        self._interval = 1.0 / max(rate, 1.0)


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


def _decode_task(status: int, body: bytes) -> ImageTask:
    if not body.strip():
        raise APIResponseError(
            f"HTTP {status} with an empty body; expected a JSON image task", status=status
        )
    try:
        return converter.structure(json.loads(body), ImageTask)
    except ValueError as exc:
        snippet = body[:_SNIPPET].decode("utf-8", "replace")
        raise APIResponseError(
            f"HTTP {status} with a body that is not JSON: {snippet!r}", status=status
        ) from exc
    except (BaseValidationError, TypeError, KeyError) as exc:
        raise APIResponseError(
            f"HTTP {status} with JSON that is not an image task ({exc})", status=status
        ) from exc


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
    ) -> None:
        self._tasks_url = base_url.rstrip("/") + "/images/generation_tasks"
        # Built per request, never as a session default: aiohttp would merge a default
        # Authorization header into requests to other origins (the image storage host).
        self._auth = {"Authorization": f"Bearer {api_key.reveal()}"}
        self._timeouts = timeouts
        self._retry = retry
        self._limits = limits
        self._counters = counters
        self.throttle = Throttle(limits.requests_per_second)
        self._client: aiohttp.ClientSession | None = None
        self._proxy: Proxy | None = None
        self._proxy_options: dict[str, Any] = {}

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
        self._proxy_options = proxy_options(self._proxy)
        timeouts = self._timeouts
        self._client = network.client(
            # One timer per request: the total bounds pool waits, silence and trickles alike
            # (API answers are small), and sock_connect adds one only when a socket opens.
            timeout=aiohttp.ClientTimeout(total=timeouts.request, sock_connect=timeouts.connect),
            max_connections=self._limits.max_connections,
        )

    async def aclose(self) -> None:
        """Close the pool; idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def create(self, payload: Mapping[str, Any], *, idempotency_key: str) -> ImageTask:
        """Create a task, retrying only where no task can have been created.

        A failure after the request may have reached the server becomes
        `AmbiguousCreateError`, never a silent second (paid) create.
        """
        body = json.dumps(payload).encode()
        headers = {
            **self._auth,
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }

        async def attempt(number: int) -> ImageTask:
            status, body_out = await self._send("POST", self._tasks_url, headers, body, number)
            task = _decode_task(status, body_out)
            self._counters.creates += 1
            return task

        try:
            return await retrying(
                attempt,
                policy=self._retry,
                retryable=_is_retryable_create,
                on_retry=self._count_retry,
            )
        except APIError as exc:
            if _is_definite(exc) or _is_retryable_create(exc):
                raise
            raise AmbiguousCreateError(
                f"the create may have reached the server before it failed ({exc}); "
                f"retry with idempotency_key={idempotency_key!r} so it is not billed twice",
                idempotency_key=idempotency_key,
            ) from exc

    async def retrieve(self, task_id: str, *, retry: bool = True) -> ImageTask:
        """Fetch a task's current state; with `retry`, transient failures are retried."""
        url = f"{self._tasks_url}/{quote(task_id, safe='')}"

        async def attempt(number: int) -> ImageTask:
            self._counters.polls += 1
            try:
                status, body = await self._send("GET", url, self._auth, None, number)
            except NotFoundError as exc:
                raise TaskNotFoundError(
                    f"task {task_id} was not found: {exc.message}; it may have expired, "
                    "or belong to another API key or deployment",
                    task_id=task_id,
                    status=exc.status,
                    code=exc.code,
                    request_id=exc.request_id,
                ) from exc
            return _decode_task(status, body)

        if not retry:
            return await attempt(1)
        return await retrying(attempt, policy=self._retry, on_retry=self._count_retry)

    def _count_retry(self) -> None:
        self._counters.retries += 1

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        attempt: int = 1,
    ) -> tuple[int, bytes]:
        client = self._client
        if client is None:
            raise RuntimeError("the transport is not open; use 'async with Session(...)'")
        if self.throttle.holding:  # a coroutine per request only when it may have to wait
            await self.throttle.wait()
        started = time.perf_counter()
        try:
            async with client.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                **self._proxy_options,
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
            if logger.isEnabledFor(logging.DEBUG):
                self._log(method, url, f"failed ({type(exc).__name__})", started, attempt, None)
            raise_connection_error(
                exc,
                what=f"{method} {url}",
                proxy=self._proxy,
                timeouts=self._timeouts,
                deadline=self._timeouts.request,
            )
        if logger.isEnabledFor(logging.DEBUG):
            request_id = response_headers.get("x-request-id")
            self._log(method, url, str(status), started, attempt, request_id)
        if content is None:
            raise APIResponseError(
                f"{method} {url} answered HTTP {status} with a body over "
                f"max_response_bytes={self._limits.max_response_bytes} (after decompression); "
                "raise Limits.max_response_bytes if such answers are expected",
                status=status,
            )
        if status >= 300:
            error = _status_error(status, reason, response_headers, content)
            if isinstance(error, RateLimitError):
                self._pause_for(error)
            else:
                self.throttle.record_success()
            raise error
        self.throttle.record_success()
        return status, content

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
