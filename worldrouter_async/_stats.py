"""Session counters: mutated in place on the hot path, read as an immutable snapshot.

`Counters` subscribes to the session's `Hooks` for the poller's events (pending, completed,
failed, usage); the transport and breaker still count their own requests directly.
"""

from __future__ import annotations

from attrs import define

from ._hooks import Event, TaskResolved, TaskTracked, TaskUntracked
from .models import Usage


@define(frozen=True)
class SessionStats:
    """A snapshot of what one session has done so far (`Session.stats`)."""

    creates: int
    polls: int
    retries: int
    rate_limit_pauses: int
    pending: int
    completed: int
    failed: int
    usage: Usage
    #: Times the outage breaker opened (the API looked down and requests were held).
    breaker_opens: int = 0
    #: Recovery probes sent while the breaker was open (GETs; they create nothing).
    breaker_probes: int = 0


class Counters:
    """The live, mutable counters behind `SessionStats` (plain slots: this is the hot path)."""

    __slots__ = (
        "breaker_opens",
        "breaker_probes",
        "completed",
        "creates",
        "failed",
        "input_tokens",
        "output_tokens",
        "pending",
        "polls",
        "rate_limit_pauses",
        "retries",
        "total_tokens",
    )

    def __init__(self) -> None:
        self.creates = self.polls = self.retries = self.rate_limit_pauses = 0
        self.pending = self.completed = self.failed = 0
        self.breaker_opens = self.breaker_probes = 0
        self.input_tokens = self.output_tokens = self.total_tokens = 0

    def add_usage(self, usage: Usage | None) -> None:
        """Add one finished task's token usage to the totals."""
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.total_tokens += usage.total_tokens

    def on_event(self, event: Event) -> None:
        """Count one poller event (an `Observer` of the session's `Hooks`)."""
        match event:
            case TaskTracked():
                self.pending += 1
            case TaskUntracked():
                self.pending -= 1
            case TaskResolved(succeeded=True, usage=usage):
                self.add_usage(usage)
                self.completed += 1
            case TaskResolved(usage=usage):
                self.add_usage(usage)
                self.failed += 1

    def snapshot(self) -> SessionStats:
        """An immutable copy of the counters now."""
        return SessionStats(
            creates=self.creates,
            polls=self.polls,
            retries=self.retries,
            rate_limit_pauses=self.rate_limit_pauses,
            pending=self.pending,
            completed=self.completed,
            failed=self.failed,
            usage=Usage(self.input_tokens, self.output_tokens, self.total_tokens),
            breaker_opens=self.breaker_opens,
            breaker_probes=self.breaker_probes,
        )
