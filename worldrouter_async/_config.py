"""Small immutable policy objects: retries, polling cadence, timeouts and limits.

Backoff and poll intervals are pure functions of the attempt number so they can be tested
and reasoned about without a clock.
"""

from __future__ import annotations

import math
import random
from typing import Final

from attrs import define, field, validators

from ._errors import ConfigurationError

_positive = validators.gt(0.0)
_non_negative = validators.ge(0.0)


def _at_least_one(instance: object, attribute: object, value: int) -> None:
    if value < 1:
        name = getattr(attribute, "name", "value")
        raise ConfigurationError(f"{name} must be at least 1 (got {value!r})")


@define(frozen=True)
class RetryPolicy:
    """How failed requests are retried: capped exponential backoff with full jitter.

    A `Retry-After` hint from the server replaces the computed backoff; a hint longer than
    `max_retry_after` (or not finite) ends the retries and raises instead of sleeping for hours.
    A 429 means the request was not processed, so it is retried beyond `attempts` for as long
    as `rate_limit_patience` seconds: a busy account slows a job down rather than failing it.

    Example:
        >>> RetryPolicy(attempts=6, cap=10.0).backoff(3, jitter=False)
        2.0
    """

    attempts: int = field(default=4, validator=_at_least_one)
    """Tries in all for one request (the first included) before its error is raised."""
    base: float = field(default=0.5, validator=_positive)
    """Seconds of backoff before the first retry; doubled for each retry after it."""
    cap: float = field(default=30.0, validator=_positive)
    """The longest backoff in seconds, however many retries came before."""
    jitter: bool = True
    """Wait a random time between 0 and the backoff (full jitter), so clients spread out."""
    max_retry_after: float = field(default=120.0, validator=_non_negative)
    """The longest `Retry-After` in seconds that is waited out; a longer one raises at once."""
    rate_limit_patience: float = field(default=600.0, validator=_non_negative)
    """Seconds a request keeps retrying 429s beyond `attempts` (and waits on an open breaker)."""

    def backoff(self, attempt: int, *, jitter: bool | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based), clamped to `cap`."""
        exponent = min(max(attempt - 1, 0), 64)  # 2**64 * base overflows nothing and exceeds cap
        delay = min(self.cap, self.base * math.pow(2.0, exponent))
        use_jitter = self.jitter if jitter is None else jitter
        return random.uniform(0.0, delay) if use_jitter else delay


@define(frozen=True)
class PollPolicy:
    """When the poller checks a pending task: after `initial_delay`, then at intervals growing
    by `factor` up to `max_interval`, each spread by +/- `jitter` (a fraction).

    The defaults suit real image generation, which takes roughly 5 to 90 seconds: the first
    check comes after 2 s, the interval grows 2, 3, 4.5, 6.75, then stays at 8 s, so a
    finished task is noticed at most `max_interval` late, and a task of any length costs a
    handful of polls instead of one a second.

    With `adaptive` (the default) the session learns from its own tasks, grouped by shape
    (model, size, quality, n). Once `min_samples` of a shape have completed:

    - the gap between polls is 12% of the shape's median duration (3 s for 25 s tasks; at
      most `max_interval`), so a finished task is noticed about 6% of a typical duration
      late on average, instead of up to `max_interval` late;
    - a new task is first polled one gap after the fastest 3% of its shape had finished
      (never later than their median), skipping the polls that could not succeed, so only
      about 3% of tasks wait longer than one gap;
    - a task older than every learned duration is polled every 12% of its age, up to
      `max_interval`.

    Before anything of a shape has finished, only its first 8 tasks are polled (densely
    while others wait on them); the others wait until one of those finishes (at most 4
    `max_interval`s). At equal 95th-percentile detection delay this sends about 0.6x the
    requests of a fixed-interval loop on a stream of tasks (see docs/benchmarks.md, which
    also explains the choice with `benchmarks/sim.py`). The learned first poll may come
    later than `max_interval`; `adaptive=False` keeps every gap within `max_interval`.

    `not_found_grace`: seconds after its create (on the session's clock) during which a
    404 for a task this session created is polled again instead of ending the handle with
    `TaskNotFoundError`: a replica or cache may not know a task it has just been told
    about. After the grace, and at once for tasks attached with `Session.track`, a 404
    ends the handle. 0 turns the grace off.

    Example:
        >>> PollPolicy().interval(0, jitter=False), PollPolicy().interval(10, jitter=False)
        (2.0, 8.0)
    """

    initial_delay: float = field(default=2.0, validator=_positive)
    """Seconds from the create to the first poll."""
    factor: float = field(default=1.5, validator=validators.ge(1.0))
    """Each interval is the previous one times this (1 keeps it constant)."""
    max_interval: float = field(default=8.0, validator=_positive)
    """The longest interval in seconds between two polls of one task."""
    jitter: float = field(default=0.1, validator=[validators.ge(0.0), validators.lt(1.0)])
    """Each interval is spread by up to this fraction either way, so tasks do not poll in step."""
    adaptive: bool = True
    """Learn first polls and intervals from the session's own finished tasks (see above)."""
    min_samples: int = field(default=8, validator=_at_least_one)
    """Finished tasks of one shape needed before their durations are used."""
    not_found_grace: float = field(default=30.0, validator=_non_negative)
    """Seconds after the create in which a 404 for the session's own task is polled again."""

    def interval(self, poll_number: int, *, jitter: bool = True) -> float:
        """Seconds before poll `poll_number` (0 is the first poll after the create)."""
        exponent = min(max(poll_number, 0), 256)  # clamp: factor**256 is past any cap
        delay = min(self.max_interval, self.initial_delay * math.pow(self.factor, exponent))
        if jitter and self.jitter:
            delay *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return delay


@define(frozen=True)
class Timeouts:
    """Network timeouts in seconds, so no request can hang however the server behaves.

    `connect` bounds opening a connection (TCP and TLS, to the proxy if any); `request` a
    whole API request (pool wait, connect, headers and body: a server trickling one byte at
    a time, or going silent, still fails on time); `download` the whole download of one
    image, every attempt, wait between retries and redirect included (the wait for a free
    download slot is not); `read` each wait for a download's next bytes.

    `create_keepalive`: a create reuses a pooled connection only if it was last used less
    than this long ago, else it opens a fresh one. Keep it under your server's keep-alive
    timeout, so a paid create is never sent on a connection the server is closing.

    Example:
        >>> Timeouts(request=10.0).request
        10.0
    """

    connect: float = field(default=10.0, validator=_positive)
    """Seconds to open a connection (TCP and TLS, to the proxy if any)."""
    read: float = field(default=30.0, validator=_positive)
    """Seconds an image download waits for its next bytes."""
    request: float = field(default=60.0, validator=_positive)
    """Seconds for one whole API request, pool wait and body included."""
    download: float = field(default=120.0, validator=_positive)
    """Seconds for one whole image download."""
    create_keepalive: float = field(default=0.5, validator=_positive)
    """A create reuses a pooled connection only if it was used less than this long ago."""


@define(frozen=True)
class Limits:
    """Concurrency and rate bounds shared by every request of one session.

    `requests_per_second`, when set, paces creates and polls together so a session stays
    under an account's rate limit instead of bouncing off 429s. `max_response_bytes` caps
    an API answer after decompression (a task is a few KiB): a larger or endless body fails
    with `APIResponseError` once the cap is reached, so memory stays bounded.
    `max_download_bytes` caps one downloaded image.
    """

    max_connections: int = field(default=100, validator=_at_least_one)
    """Connections to the API at once, in each of the two pools (creates; everything else)."""
    max_inflight_polls: int = field(default=64, validator=_at_least_one)
    """Polls in flight at once (the poller's workers), however many tasks are pending."""
    max_concurrent_creates: int = field(default=16, validator=_at_least_one)
    """Creates that `submit_many` (unless given `concurrency=`) and a pipeline send at once."""
    max_concurrent_downloads: int = field(default=8, validator=_at_least_one)
    """Image downloads in flight at once."""
    max_download_bytes: int = field(default=64 * 1024 * 1024, validator=_at_least_one)
    """The largest image in bytes one download accepts (64 MiB)."""
    max_response_bytes: int = field(default=4 * 1024 * 1024, validator=_at_least_one)
    """The largest API answer in bytes, after decompression (4 MiB)."""
    requests_per_second: float | None = field(
        default=None, validator=validators.optional(_positive)
    )
    """Creates and polls per second at most, together; None leaves pacing to 429s."""


FAST_POLL: Final = PollPolicy(
    initial_delay=0.005, factor=1.5, max_interval=0.02, jitter=0.0, not_found_grace=0.03
)
"""Polls every few milliseconds: pair it with the emulator's default ``time_scale`` (0.001,
which also makes the 30 s grace for a 404 just after a create 0.03 s)."""

FAST_RETRY: Final = RetryPolicy(attempts=4, base=0.001, cap=0.01)
"""Retries after a millisecond or two, so fault tests stay fast."""

_testing = False


def set_testing(enabled: bool) -> None:
    """Make sessions that use default policies poll and retry within milliseconds.

    For users' own test suites (with the bundled emulator): explicit `poll=`/`retry=`
    arguments still win.
    """
    global _testing
    _testing = enabled


def is_testing() -> bool:
    """Whether `set_testing(True)` is in force."""
    return _testing


def default_poll_policy() -> PollPolicy:
    """The poll policy a session uses when none is given."""
    return FAST_POLL if _testing else PollPolicy()


def default_retry_policy() -> RetryPolicy:
    """The retry policy a session uses when none is given."""
    return FAST_RETRY if _testing else RetryPolicy()
