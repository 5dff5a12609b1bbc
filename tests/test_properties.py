"""Hypothesis properties of the pure policy functions the scheduler is built on, and of
answer decoding."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from worldrouter_async import APIError, ImageTask, PollPolicy, RetryPolicy
from worldrouter_async._answers import decode_converted, decode_task, parse_retry_after
from worldrouter_async._cadence import Durations

attempts = st.integers(min_value=-5, max_value=10_000)
seconds = st.floats(min_value=0.001, max_value=1e6, allow_nan=False)


@given(attempts, seconds, seconds)
def test_backoff_stays_within_zero_and_its_capped_exponential(
    attempt: int, base: float, cap: float
) -> None:
    """Jittered backoff lies in [0, min(cap, base * 2**(attempt-1))], for any attempt number."""
    policy = RetryPolicy(base=base, cap=cap)
    ceiling = policy.backoff(attempt, jitter=False)
    assert ceiling == min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))
    assert 0.0 <= policy.backoff(attempt) <= ceiling <= cap


@given(st.integers(1, 500), st.integers(1, 500), seconds, seconds)
def test_backoff_never_shrinks_as_attempts_grow(
    first: int, second: int, base: float, cap: float
) -> None:
    """Without jitter, a later attempt never waits less than an earlier one."""
    policy = RetryPolicy(base=base, cap=cap)
    low, high = sorted((first, second))
    assert policy.backoff(low, jitter=False) <= policy.backoff(high, jitter=False)


@given(
    st.integers(-5, 10_000),
    seconds,
    st.floats(min_value=1.0, max_value=10.0),
    seconds,
    st.floats(min_value=0.0, max_value=0.99),
)
def test_poll_intervals_stay_within_their_jitter_of_the_capped_growth(
    poll: int, initial: float, factor: float, max_interval: float, jitter: float
) -> None:
    """Each interval is the capped geometric delay spread by at most +/- jitter."""
    policy = PollPolicy(
        initial_delay=initial, factor=factor, max_interval=max_interval, jitter=jitter
    )
    plain = policy.interval(poll, jitter=False)
    assert plain <= max_interval
    assert (
        plain * (1 - jitter) * (1 - 1e-12)
        <= policy.interval(poll)
        <= plain * (1 + jitter) * (1 + 1e-12)
    )


@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_retry_after_seconds_parse_to_their_value_floored_at_zero(value: float) -> None:
    """A numeric Retry-After is seconds (negative ones mean now)."""
    assert parse_retry_after({"Retry-After": repr(value)}) == max(value, 0.0)


@given(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_retry_after_ms_wins_over_retry_after(milliseconds: float, value: float) -> None:
    """retry-after-ms, when it parses, is preferred and converted to seconds."""
    headers = {"retry-after-ms": repr(milliseconds), "Retry-After": repr(value)}
    assert parse_retry_after(headers) == max(milliseconds / 1000.0, 0.0)


@given(st.text())
def test_retry_after_garbage_never_raises(raw: str) -> None:
    """Any header text gives None or a non-negative number, never an exception."""
    parsed = parse_retry_after({"Retry-After": raw, "retry-after-ms": raw})
    assert parsed is None or parsed >= 0.0


@given(st.integers(min_value=60, max_value=10**7))
def test_retry_after_http_dates_are_seconds_from_now(ahead: int) -> None:
    """An HTTP date in the future parses to about the seconds until it; past dates to 0."""
    # Wall time by nature (a date): HTTP dates drop fractions of a second and a busy machine
    # may stall between formatting and parsing, so the lower bound allows a minute.
    now = time.time()
    future = email.utils.formatdate(now + ahead, usegmt=True)
    past = email.utils.formatdate(now - ahead, usegmt=True)
    parsed = parse_retry_after({"Retry-After": future})
    assert parsed is not None
    assert ahead - 60 <= parsed <= ahead + 1
    assert parse_retry_after({"Retry-After": past}) == 0.0


@given(
    st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=1, max_size=600),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_quantile_is_taken_over_the_last_256(samples: list[float], fraction: float) -> None:
    """quantile(f) is sorted(window)[int(len * f)] (the last at 1.0) over the last 256 samples."""
    durations = Durations()
    for sample in samples:
        durations.add(sample)
    window = sorted(samples[-256:])
    assert len(durations) == len(window)
    assert durations.quantile(fraction) == window[min(int(len(window) * fraction), len(window) - 1)]
    assert (durations.median, durations.slowest) == (window[len(window) // 2], window[-1])


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05", "yesterday"]),
    st.lists(st.just({"url": "https://x/1.png"}), max_size=1),
    st.just({}),
)
_answers = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.just("imgtask_1"), _values),
        "task_id": st.one_of(st.just("imgtask_1"), _values),
        "status": st.one_of(
            st.sampled_from(["queued", "in_progress", "completed", "failed"]), _values
        ),
        "object": _values,
        "model": _values,
        "created": _values,
        "created_at": _values,
        "data": _values,
        "usage": _values,
        "error": _values,
        "progress": _values,
    },
)


def _outcome(decode: Callable[..., ImageTask], body: bytes, asked: str | None) -> object:
    try:
        return decode(200, body, "req_1", asked=asked)
    except APIError as exc:
        return (type(exc), str(exc))


@given(_answers, st.sampled_from(["imgtask_1", None]))
def test_an_answer_decoded_lean_is_the_task_the_converter_reads(
    answer: dict[str, object], asked: str | None
) -> None:
    """Any poll or create answer gives the same task (or error) lean as through cattrs."""
    body = json.dumps(answer).encode()
    assert _outcome(decode_task, body, asked) == _outcome(decode_converted, body, asked)
