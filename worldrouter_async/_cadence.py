"""Learning when tasks finish, so the poller polls when an answer is likely.

Tasks of one shape (model, size, quality, n) take similar times. A `Cohort` remembers how
long its recent tasks took; a new task is first polled when the fastest tenth had finished.
Before anything of a cohort has finished, only its first `PROBES` tasks are polled on the
normal schedule; the rest are parked until a probe finishes (or `PARK_LIMIT` maximum
intervals pass), then polled shortly before their own expected finish.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Final, Generic, TypeVar

from .models import ImageRequest

PROBES: Final = 8
"""Tasks per cohort polled on the normal schedule while nothing of it has finished."""

PARK_LIMIT: Final = 4
"""A parked task is polled after this many `max_interval`s even if no probe has finished."""

LEAD: Final = 0.9
"""A learned first poll comes at this fraction of the learned duration, to land just before."""

_T = TypeVar("_T")

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

    def fastest_tenth(self, min_samples: int) -> float | None:
        """The 10th percentile (the fastest, below ten samples), or None if too few."""
        if len(self._sorted) < max(min_samples, 1):
            return None
        return self._sorted[len(self._sorted) // 10]


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
