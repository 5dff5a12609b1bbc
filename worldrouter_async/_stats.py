"""Session counters: mutated in place on the hot path, read as an immutable snapshot.

`Counters` is a subscriber of the session's `Hooks`: it counts the API layer's events
(creates, polls, retries, rate-limit pauses), the outage breaker's (openings, probes) and
the poller's (pending, completed, failed, usage). Nothing else writes to it.
"""

from __future__ import annotations

from typing import Final

from attrs import define

from ._errors import DownloadError
from ._hooks import (
    BreakerOpened,
    BreakerProbeSent,
    Event,
    RateLimitPaused,
    RequestAnswered,
    RequestFailed,
    RetryScheduled,
    TaskCreated,
    TaskResolved,
    TaskTracked,
    TaskUntracked,
)
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

    #: The events it counts (`Hooks` gives it no others).
    event_kinds: Final = (
        RequestAnswered,
        RequestFailed,
        TaskCreated,
        RetryScheduled,
        RateLimitPaused,
        BreakerOpened,
        BreakerProbeSent,
        TaskTracked,
        TaskUntracked,
        TaskResolved,
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
        """Count one event (an `Observer` of the session's `Hooks`)."""
        if type(event) is RequestAnswered or type(event) is RequestFailed:  # per request: first
            if not event.probe and event.request.method == "GET":  # a poll or a retrieve
                self.polls += 1
            return
        match event:
            case TaskCreated():
                self.creates += 1
            case RetryScheduled(error=error):
                if not isinstance(error, DownloadError):  # API requests retried, as ever
                    self.retries += 1
            case RateLimitPaused():
                self.rate_limit_pauses += 1
            case BreakerOpened():
                self.breaker_opens += 1
            case BreakerProbeSent():
                self.breaker_probes += 1
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
