"""`DueQueue`: items ordered by the time they are next due, with cheap reschedule and cancel.

A heap with lazy deletion, as trio's ``Deadlines``: rescheduling pushes a new heap entry
and leaves the old one behind as stale; stale entries are skipped when they reach the top,
and the heap is rebuilt once they outnumber the live ones, so a task rescheduled a thousand
times (or cancelled) never costs a thousand heap slots.
"""

from __future__ import annotations

import heapq
import math
from typing import Final, Generic, TypeVar

_T = TypeVar("_T")

PRUNE_MINIMUM: Final = 64
"""Stale entries are not worth a rebuild below this many."""


class DueQueue(Generic[_T]):
    """Hashable items, each due at one time; `pop_due` hands them out earliest first.

    Items due at the same time come out in the order they were scheduled.

    Example:
        >>> queue = DueQueue[str]()
        >>> queue.schedule("a", 2.0); queue.schedule("b", 1.0); queue.schedule("a", 0.5)
        >>> queue.pop_due(1.0), queue.pop_due(1.0), queue.pop_due(1.0)
        ('a', 'b', None)
    """

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _T]] = []
        self._live: dict[_T, int] = {}  # item -> sequence number of its current heap entry
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, item: object) -> bool:
        return item in self._live

    def schedule(self, item: _T, due: float) -> bool:
        """Make `item` due at `due` (replacing any earlier time); True if it is now first."""
        self._seq += 1
        self._live[item] = self._seq
        heap = self._heap
        first = not heap or due < heap[0][0]
        heapq.heappush(heap, (due, self._seq, item))
        if len(heap) > 2 * len(self._live) + PRUNE_MINIMUM:
            self._prune()
        return first

    def cancel(self, item: _T) -> None:
        """Forget `item` (harmless if it is not scheduled)."""
        if self._live.pop(item, None) is not None and (
            len(self._heap) > 2 * len(self._live) + PRUNE_MINIMUM
        ):
            self._prune()

    def clear(self) -> None:
        """Forget every item."""
        self._heap.clear()
        self._live.clear()

    def next_due(self) -> float:
        """When the earliest item is due (inf when the queue is empty)."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else math.inf

    def pop_due(self, now: float) -> _T | None:
        """Remove and return the earliest item due at or before `now`, else None."""
        self._drop_stale()
        heap = self._heap
        if not heap or heap[0][0] > now:
            return None
        _, _, item = heapq.heappop(heap)
        del self._live[item]
        return item

    def _drop_stale(self) -> None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)

    def _prune(self) -> None:
        live = self._live
        self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
        heapq.heapify(self._heap)
