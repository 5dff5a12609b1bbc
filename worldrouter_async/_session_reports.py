"""What a `Session` reports about itself: counters, abandoned tasks, status changes.

`SessionReports` holds the public `stats`, `abandoned` and `status_changes`, which `Session`
inherits: read-only views of the session's `Counters`, its log of abandoned tasks and its
status feed, all fed while the session runs.
"""

from __future__ import annotations

from ._creates import AbandonedLog, AbandonedTask
from ._events import DEFAULT_BUFFER, StatusFeed, StatusStream
from ._stats import Counters, SessionStats


class SessionReports:
    """`Session`'s views of what it has done: `stats`, `abandoned`, `status_changes`."""

    _counters: Counters
    _abandoned: AbandonedLog
    _feed: StatusFeed

    @property
    def stats(self) -> SessionStats:
        """Counts of creates, polls, retries, pauses, outcomes and summed token usage."""
        return self._counters.snapshot()

    @property
    def abandoned(self) -> tuple[AbandonedTask, ...]:
        """Tasks created for a caller that was cancelled (or left early) before it got the
        handle, oldest first; the most recent 10,000 are kept.

        Cancelling `generate`, `submit_many`, `submit` or a `pipeline` (or leaving a pipeline
        early) stops tracking the tasks it created that no caller got a handle for, and lists
        them here (and in a WARNING log line): ``session.track(record.task_id)`` gets a
        result. A record without a task id is a create cut off mid-flight, which may or may
        not have created a task: its idempotency key is kept.
        """
        return self._abandoned.snapshot()

    def status_changes(self, *, buffer: int = DEFAULT_BUFFER) -> StatusStream:
        """An async iterator of every `StatusChange` of this session from now on.

        Each stream buffers up to `buffer` changes; when its reader falls that far behind,
        the oldest change is dropped and counted in `StatusStream.dropped`, so the poller
        never waits for a reader. Iteration ends when the session closes, after the
        ``closed`` endings of the tasks still pending. Open it before submitting to see
        every change of those tasks.

        Example:
            >>> async def main(session):  # doctest: +SKIP
            ...     async with session.status_changes() as changes:
            ...         async for change in changes:
            ...             print(change.task_id, change.new, change.final)
        """
        return self._feed.subscribe(buffer)
