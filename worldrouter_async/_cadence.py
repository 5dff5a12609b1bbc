"""Learning when tasks finish, so the poller polls when an answer is likely.

Tasks of one shape (model, size, quality, n) take similar times. A `Cohort` remembers how
long its recent tasks took, and three pure decisions (the poller calls them with the time;
`benchmarks/sim.py` calls the same functions on virtual time) turn that into a schedule:

- `first_delay`: a new task is first polled just before the fastest tenth of its cohort had
  finished. Before anything of a cohort has finished, only its first `PROBES` tasks are
  polled on the policy's growing schedule; the rest are parked until a probe finishes (or
  `PARK_LIMIT` maximum intervals pass).
- `next_delay`: after a poll that found the task still running, the next poll comes when
  the detection delay a poll would save, averaged over what the cohort's durations say
  about a task of this age, reaches `EFFORT` of the cohort's median duration. Polls are
  dense where tasks of this age most often finish and sparse where few do; the gap is
  never longer than `max_interval`.
- `learn`: a finished task's duration (the middle of its last two polls) feeds the cohort,
  and releases the parked tasks.
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
"""Tasks per cohort polled on the normal schedule while nothing of it has finished."""

PARK_LIMIT: Final = 4
"""A parked task is polled after this many `max_interval`s even if no probe has finished."""

LEAD: Final = 0.9
"""A learned first poll comes at this fraction of the fastest tenth, to land just before."""

FIRST_QUANTILE: Final = 0.1
"""The learned first poll aims at this quantile of the cohort's durations (times `LEAD`)."""

EFFORT: Final = 0.012
"""A poll is due once the detection delay it would save is worth this share of the median
duration: smaller means more polls and fresher results (tuned with `benchmarks/sim.py`)."""

MIN_AHEAD: Final = 2
"""`next_delay` follows the learned durations while at least this many are longer than the
task's age; past them (the tail, or a cold burst) it falls back to the growing schedule."""


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

    def __init__(self, size: int = 64) -> None:
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

    def next_age(self, age: float, worth: float) -> float | None:
        """The age at which the next poll of a task still running at `age` is due.

        That is the first age `t` at which the detection delay saved by polling, averaged
        over the recorded durations longer than `age` (sum of `t - d` over those `d <= t`,
        divided by their count), reaches `worth` seconds. Where durations are dense the
        gap is short; it grows as 1/sqrt(hazard), the shape that minimises polls plus
        delay. None when fewer than `MIN_AHEAD` durations are longer than `age`.
        """
        ahead = self._sorted
        start = bisect.bisect_right(ahead, age)
        count = len(ahead) - start
        if count < MIN_AHEAD:
            return None
        need = worth * count
        saved = 0.0  # sum of (t - d) over the durations passed so far, at t = ahead[i - 1]
        for passed in range(1, count):
            previous, here = ahead[start + passed - 1], ahead[start + passed]
            step = passed * (here - previous)
            if saved + step >= need:
                return previous + (need - saved) / passed
            saved += step
        return ahead[-1] + (need - saved) / count


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

    Only the learned first poll may come later than `policy.interval(0)`; a parked entry is
    polled after `PARK_LIMIT * max_interval` at the latest (or when a probe finishes).
    """
    delay = policy.interval(0)
    if cohort is None:
        return delay
    durations = cohort.durations
    if len(durations) >= policy.min_samples:
        return max(delay, LEAD * durations.quantile(FIRST_QUANTILE))
    if cohort.probes < PROBES:
        cohort.probes += 1
        entry.probe = True
        return delay
    cohort.parked.append(entry)
    return PARK_LIMIT * policy.max_interval


def next_delay(policy: PollPolicy, cohort: Cohort[_T] | None, entry: _T, now: float) -> float:
    """Seconds from `now`, when a poll found `entry` still running, to its next poll.

    Follows the learned durations (see `Durations.next_age`) once the cohort has
    `min_samples` of them, never waiting longer than `max_interval` nor less than a quarter
    of `initial_delay`; otherwise the policy's growing interval.
    """
    entry.polls += 1
    entry.seen = now
    created = entry.created
    if cohort is not None and created is not None:
        durations = cohort.durations
        if len(durations) >= policy.min_samples:
            age = now - created
            due = durations.next_age(age, EFFORT * durations.quantile(0.5))
            if due is not None:
                return min(max(due - age, policy.initial_delay / 4), policy.max_interval)
    return policy.interval(entry.polls)


def learn(
    cohort: Cohort[_T] | None,
    entry: _T,
    now: float,
    *,
    completed: bool,
    schedule: Callable[[_T, float], None],
) -> None:
    """Feed `entry`'s duration (it finished by `now`) to `cohort`; release the parked tasks.

    The task finished between its last two polls, so the middle of them is recorded (the
    poll time itself when the first poll found it finished). Each parked task is handed
    to `schedule` with the time of its first poll.
    """
    created = entry.created
    if cohort is None or created is None:
        return
    if completed:
        finished = (entry.seen + now) / 2 if entry.polls else now
        cohort.durations.add(finished - created)
    if not cohort.parked:
        return
    durations = cohort.durations
    learned = durations.quantile(FIRST_QUANTILE) if len(durations) else now - created
    parked, cohort.parked = cohort.parked, []
    for waiting in parked:
        if waiting.active and waiting.created is not None:
            schedule(waiting, max(now, waiting.created + LEAD * learned))
