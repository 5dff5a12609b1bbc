"""Learning when tasks finish, so the poller polls when an answer is likely.

Tasks of one shape (model, size, quality, n) take similar times. A `Cohort` remembers how
long its recent tasks took, and these decisions (the poller calls them with the time;
`benchmarks/sim.py` calls the same functions on virtual time) turn that into a schedule:

- `first_delay`: a new task is first polled one `SPACING` after the time by which all but
  `EARLY` of its cohort had finished, so that few tasks wait long for their first poll.
  Before anything of a cohort has finished, only its first `PROBES` tasks are polled (as
  probes, densely); the rest are parked until a probe finishes (or `PARK_LIMIT` maximum
  intervals pass).
- `next_delay`: after a poll that found the task still running, the next comes `SPACING`
  of the cohort's median duration later (at most `max_interval`), and further apart once
  the task is older than any learned duration.
- `learn`: a finished task's duration (the middle of its last two polls) feeds the cohort,
  and releases the parked tasks.
- `poll_failed`: a task whose poll failed stops teaching its cohort.

The constants were tuned with `benchmarks/sim.py`; docs/benchmarks.md gives the reasoning.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

from .models import ImageRequest

if TYPE_CHECKING:
    from ._config import PollPolicy

PROBES: Final = 8
"""Tasks per cohort polled as probes while nothing of it has finished."""

PROBE_SHARE: Final = 0.1
"""While tasks are parked on it, a probe is polled every `initial_delay`, or this share of
its age once that is longer, so the parked tasks are released soon after it finishes."""

PARK_LIMIT: Final = 4
"""A parked task is polled after this many `max_interval`s even if no probe has finished."""

SPACING: Final = 0.12
"""Learned polls come this share of the cohort's median duration apart (at most
`max_interval`): a finished task is noticed about that late at worst, half of it on average."""

EARLY: Final = 0.03
"""The share of a cohort's tasks that may finish more than one `SPACING` before their
first poll: the price of not polling every task from the start."""

LEAD: Final = 0.9
"""A task the first poll found finished is recorded as taking this fraction of the poll's
age: it finished some time before, and recording the poll time itself would let the learned
durations creep later with every task the first poll finds finished."""


class Scheduled(Protocol):
    """What the cadence reads and writes on a tracked task (the poller's entries)."""

    created: float | None
    seen: float
    polls: int
    probe: bool
    active: bool


_T = TypeVar("_T", bound=Scheduled)

Shape = tuple[str, str | None, str | None, int | None]


def shape_of(request: ImageRequest) -> Shape:
    """The parameters that decide how long a task takes."""
    return (request.model, request.size, request.quality, request.n)


class Durations:
    """The last `size` task durations of a cohort, kept sorted for quantiles."""

    __slots__ = ("_recent", "_sorted")

    def __init__(self, size: int = 256) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, seconds: float) -> None:
        """Record one finished task's duration, forgetting the oldest past `size`."""
        if len(self._recent) == self._recent.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._recent[0])]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, fraction: float) -> float:
        """The sample at `fraction` of the sorted durations (the fastest, below ten samples).

        Raises IndexError when nothing has been recorded.
        """
        index = min(int(len(self._sorted) * fraction), len(self._sorted) - 1)
        return self._sorted[index]

    @property
    def median(self) -> float:
        """`quantile(0.5)`, on every poll, so without the arithmetic."""
        return self._sorted[len(self._sorted) // 2]

    @property
    def slowest(self) -> float:
        """`quantile(1.0)`: the longest recorded duration."""
        return self._sorted[-1]


class Cohort(Generic[_T]):
    """What one shape of task has taught the poller, and the tasks parked on it."""

    __slots__ = ("durations", "parked", "probes")

    def __init__(self) -> None:
        self.durations = Durations()
        self.probes = 0
        self.parked: list[_T] = []


class Cadence(Generic[_T]):
    """The cohorts of one session, keyed by task shape."""

    __slots__ = ("_cohorts",)

    def __init__(self) -> None:
        self._cohorts: dict[Shape, Cohort[_T]] = {}

    def cohort(self, request: ImageRequest) -> Cohort[_T]:
        """The cohort of `request`'s shape, created on first use."""
        shape = shape_of(request)
        found = self._cohorts.get(shape)
        if found is None:
            found = self._cohorts[shape] = Cohort()
        return found


def first_delay(policy: PollPolicy, cohort: Cohort[_T] | None, entry: _T) -> float:
    """Seconds from tracking `entry` to its first poll; a parked entry joins `cohort.parked`.

    The learned first poll comes `SPACING` after the cohort's `EARLY` quantile, and no later
    than its median. Tasks the first poll finds finished are recorded only roughly (see
    `LEAD`), so that quantile is not read from the recorded durations but mirrored from the
    slow side (median squared over the `1 - EARLY` quantile, exact for the lognormal shape
    of generation times); for a long right tail it errs early, costing polls, not delay.
    A parked entry is polled after `PARK_LIMIT * max_interval` at the latest.
    """
    delay = policy.interval(0)
    if cohort is None:
        return delay
    durations = cohort.durations
    if len(durations) >= policy.min_samples:
        median, high = durations.median, durations.quantile(1.0 - EARLY)
        early = median * median / high if high > 0.0 else 0.0
        return max(delay, min(early + _spacing(policy, median), median))
    if cohort.probes < PROBES:
        cohort.probes += 1
        entry.probe = True
        return delay
    cohort.parked.append(entry)
    return PARK_LIMIT * policy.max_interval


def _spacing(policy: PollPolicy, median: float) -> float:
    """The gap between learned polls: `SPACING` of the median, within the policy's bounds."""
    return min(max(SPACING * median, policy.initial_delay / 4), policy.max_interval)


def next_delay(policy: PollPolicy, cohort: Cohort[_T] | None, entry: _T, now: float) -> float:
    """Seconds from `now`, when a poll found `entry` still running, to its next poll.

    Once the cohort has `min_samples` durations: `SPACING` of their median, growing in
    proportion to the task's age once it is older than all of them (the tail, or a burst
    still running), never more than `max_interval`. Probes with tasks parked on them are
    polled densely; anything else follows the policy's growing interval.
    """
    entry.polls += 1
    entry.seen = now
    created = entry.created
    if cohort is None or created is None:
        return policy.interval(entry.polls)
    age = now - created
    durations = cohort.durations
    if len(durations) < policy.min_samples:
        if entry.probe and cohort.parked:  # tasks wait on this one: notice its finish soon
            return min(max(policy.initial_delay, PROBE_SHARE * age), policy.max_interval)
        return policy.interval(entry.polls)
    median, slowest = durations.median, durations.slowest
    # Older than every learned duration (the tail, or a cold burst whose learned durations
    # are only its fast tasks so far): this task takes at least its age.
    return _spacing(policy, age if age > slowest else median)


def learn(
    cohort: Cohort[_T] | None,
    entry: _T,
    now: float,
    *,
    completed: bool,
    schedule: Callable[[_T, float], None],
) -> None:
    """Feed `entry`'s duration (it finished by `now`) to `cohort`; release the parked tasks.

    The task finished between its last two polls, so the middle of them is recorded (`LEAD`
    of its age when the first poll found it finished). Each parked task is handed to
    `schedule` with the time of its first poll: now, or its age of the fastest duration.
    """
    if cohort is None:
        return
    created = entry.created  # None once a poll failed: the task still releases the parked
    if completed and created is not None:
        age = now - created
        cohort.durations.add((entry.seen + now) / 2 - created if entry.polls else LEAD * age)
    if not cohort.parked:
        return
    durations = cohort.durations
    fastest = durations.quantile(0.0) if len(durations) else 0.0
    parked, cohort.parked = cohort.parked, []
    for waiting in parked:
        if waiting.active and waiting.created is not None:
            schedule(waiting, max(now, waiting.created + fastest))


def poll_failed(entry: Scheduled) -> None:
    """Stop `entry` teaching its cohort after a failed (or rate-limited) poll.

    When such a task is seen finished says more about the failure than about how long it
    took: in `benchmarks/sim.py`, learning across a 60 s outage nearly tripled the mean
    detection delay afterwards. Its later polls follow the policy's growing interval.
    """
    entry.created = None
