"""The one retry decision: which failures are transient, and how long to wait before a retry."""

from __future__ import annotations

import math

import pytest

from worldrouter_async import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProxyError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TaskNotFoundError,
    TLSVerificationError,
)
from worldrouter_async._errors import APIStatusError
from worldrouter_async._retries import (
    created_nothing,
    is_final,
    is_transient,
    may_retry_create,
    retry_delay,
)


def _download_error_caused_by(cause: BaseException) -> DownloadError:
    error = DownloadError("downloading failed", url="https://s.example/a.png")
    error.__cause__ = cause  # as `raise DownloadError(...) from cause` leaves it
    return error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ServerError("x", status=500), True),
        (ServerError("x", status=503), True),
        (APIStatusError("x", status=408), True),
        (RateLimitError("x", status=429), True),
        (AuthenticationError("x", status=401), False),
        (PermissionDeniedError("x", status=403), False),
        (NotFoundError("x", status=404), False),
        (TaskNotFoundError("x", task_id="t", status=404), False),
        (APIConnectionError("dropped"), True),
        (APITimeoutError("slow"), True),
        (APIResponseError("not JSON", status=200), True),
        (TLSVerificationError("untrusted", request_sent=False), False),
        (ProxyError("unreachable proxy"), False),
        (ProxyError("proxy login", status=407), False),
        (ProxyError("proxy's upstream failed", status=502), True),
        (DownloadError("x", url="u", status=503), True),
        (DownloadError("x", url="u", status=404), False),
        (DownloadError("refused redirect", url="u"), False),
        (_download_error_caused_by(APIConnectionError("dropped")), True),
        (_download_error_caused_by(TLSVerificationError("untrusted")), False),
        (ValueError("a bug"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    """408, 429, 5xx and broken connections are transient; TLS, proxy login, 4xx are not."""
    assert is_transient(error) is transient


def test_retry_delay_is_the_backoff_without_a_hint() -> None:
    """Without Retry-After the policy's backoff decides."""
    policy = RetryPolicy(jitter=False, base=0.5)
    assert retry_delay(policy, APIConnectionError("dropped"), 3) == 2.0


def test_retry_after_replaces_the_backoff_up_to_the_maximum() -> None:
    """A server hint is obeyed, unless it exceeds max_retry_after (or is infinite)."""
    policy = RetryPolicy(max_retry_after=10.0)
    assert retry_delay(policy, ServerError("x", status=503, retry_after=4.0), 1) == 4.0
    assert retry_delay(policy, ServerError("x", status=503, retry_after=11.0), 1) is None
    assert retry_delay(policy, ServerError("x", status=503, retry_after=math.inf), 1) is None


def test_a_429_retry_adds_no_wait_of_its_own() -> None:
    """After a 429 the session's throttle already holds every request for the hint."""
    assert retry_delay(RetryPolicy(), RateLimitError("x", status=429, retry_after=3.0), 1) == 0.0


@pytest.mark.parametrize(
    ("error", "retry", "nothing_created"),
    [
        (RateLimitError("x", status=429), True, True),
        (ServerError("x", status=503), True, False),
        (ServerError("x", status=500), False, False),
        (ServerError("x", status=502), False, False),
        (APIStatusError("x", status=408), False, False),
        (BadRequestError("x", status=400), False, True),
        (AuthenticationError("x", status=401), False, True),
        (APIConnectionError("refused", request_sent=False), True, True),
        (APITimeoutError("connect timed out", request_sent=False), True, True),
        (APIConnectionError("dropped after sending"), False, False),
        (APITimeoutError("no answer"), False, False),
        (TLSVerificationError("untrusted", request_sent=False), False, True),
        (ProxyError("proxy login", status=407), False, True),
        (APIResponseError("not JSON", status=200), False, False),
    ],
)
def test_a_create_is_retried_only_where_nothing_can_have_been_created(
    error: BaseException, retry: bool, nothing_created: bool
) -> None:
    """A paid create is resent after a 429, a 503 or a transient failure before sending;
    a failure after the request left may have created a task (ambiguous, not resent)."""
    assert may_retry_create(error) is retry
    assert created_nothing(error) is nothing_created


@pytest.mark.parametrize(
    ("error", "final"),
    [
        (InvalidRequestError("bad size"), True),
        (BadRequestError("x", status=400), True),
        (APIStatusError("too large", status=413), True),
        (BadRequestError("x", status=422), True),
        (RateLimitError("x", status=429), False),
        (ServerError("x", status=503), False),
        (AuthenticationError("x", status=401), False),
        (APIConnectionError("dropped"), False),
    ],
)
def test_a_request_refused_for_good_is_final(error: BaseException, final: bool) -> None:
    """A bad parameter, 400, 413 and 422 cannot succeed if resent; the rest may later."""
    assert is_final(error) is final
