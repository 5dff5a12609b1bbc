"""The one place that says which failures are worth retrying, and how long to wait first.

Every loop asks here: polls and downloads `is_transient`, creates (paid) `may_retry_create`
and `created_nothing`, the batch runner `is_final`; the API client and the downloader retry
through `retrying`, so "408, 429 and 5xx are transient" is written once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from ._clock import SYSTEM_CLOCK, Clock
from ._config import RetryPolicy
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    DownloadError,
    InvalidRequestError,
    ProxyError,
    RateLimitError,
    TLSVerificationError,
)
from ._hooks import Hooks, RetryScheduled

_T = TypeVar("_T")

#: Statuses that refuse a request for good: resending the same request cannot succeed.
FINAL_STATUSES: Final = frozenset({400, 413, 422})


def _transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def is_transient(exc: BaseException) -> bool:
    """True when sending the same request again later may succeed.

    408, 429, 5xx, dropped connections, timeouts and unreadable answers are transient. An
    untrusted certificate, an unreachable proxy or one refusing the tunnel (407), 401, 403,
    404 and other 4xx are not: no retry can fix them, so a handle ends at once.
    """
    if isinstance(exc, TLSVerificationError):
        return False
    if isinstance(exc, ProxyError):
        return exc.status is not None and exc.status >= 500  # the proxy's upstream failed
    if isinstance(exc, APIStatusError):
        return _transient_status(exc.status)
    if isinstance(exc, DownloadError):
        if exc.status is not None:
            return _transient_status(exc.status)
        return isinstance(exc.__cause__, APIError) and is_transient(exc.__cause__)
    return isinstance(exc, APIConnectionError | APIResponseError)


def may_retry_create(exc: BaseException) -> bool:
    """True when a failed create (paid) can be sent again: only where the server cannot
    have created the task (a 429 or 503, or a transient failure before the request left)."""
    if isinstance(exc, APIStatusError):
        return exc.status in (429, 503)
    return isinstance(exc, APIConnectionError) and not exc.request_sent and is_transient(exc)


def created_nothing(exc: BaseException) -> bool:
    """True when the server certainly did not create the task (a 4xx other than 408, or a
    request that never left this process, such as one a proxy or TLS check stopped)."""
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    return isinstance(exc, APIStatusError) and 400 <= exc.status < 500 and exc.status != 408


def is_final(exc: BaseException) -> bool:
    """True when resending the same request cannot succeed: the SDK or the server refused
    the request itself (a bad parameter, 400, 413, 422), not the moment it was sent."""
    if isinstance(exc, InvalidRequestError):
        return True
    return isinstance(exc, APIStatusError) and exc.status in FINAL_STATUSES


def retry_delay(policy: RetryPolicy, exc: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retry number `attempt`, or None when the server asks too much.

    A server's Retry-After replaces the backoff; one longer than `max_retry_after` (or not
    finite) means give up now rather than sleep for hours. After a 429 the session's throttle
    already holds every request for the hint, so the retry itself adds no wait.
    """
    hint = exc.retry_after if isinstance(exc, APIStatusError) else None
    if hint is None:
        return policy.backoff(attempt)
    if not hint <= policy.max_retry_after:  # also catches inf
        return None
    return 0.0 if isinstance(exc, RateLimitError) else hint


async def retrying(
    attempt: Callable[[int], Awaitable[_T]],
    *,
    policy: RetryPolicy,
    hooks: Hooks,
    clock: Clock = SYSTEM_CLOCK,
    retryable: Callable[[BaseException], bool] = is_transient,
) -> _T:
    """Call ``attempt(number)`` until it succeeds, retrying what `retryable` allows.

    Gives up after `policy.attempts`, except that 429s (not processed by the server) are
    retried for up to `policy.rate_limit_patience` seconds. Waits are on `clock`. Each
    retry is reported to `hooks` as `RetryScheduled` before its wait.
    """
    number = 1
    patient_until = clock.now() + policy.rate_limit_patience
    while True:
        try:
            return await attempt(number)
        except APIError as exc:
            out_of_attempts = number >= policy.attempts and not (
                isinstance(exc, RateLimitError) and clock.now() < patient_until
            )
            if out_of_attempts or not retryable(exc):
                raise
            delay = retry_delay(policy, exc, number)
            if delay is None:
                raise
            hooks.emit(RetryScheduled(exc, delay, number + 1))
            await clock.sleep_until(clock.now() + delay)
            number += 1
