"""The log lines of the session's events: a subscriber of its `Hooks` that writes them.

One DEBUG line per API request (never its headers, so never the key), INFO lines for
retries, rate-limit pauses and the outage breaker opening and closing. Warnings about one
task (an undocumented status, abandoned tasks) are still logged where they happen.
"""

from __future__ import annotations

import logging
from typing import Final

from ._hooks import (
    BreakerClosed,
    BreakerOpened,
    Event,
    RateLimitPaused,
    RequestAnswered,
    RequestFailed,
    RetryScheduled,
)
from ._logs import logger
from ._transports.base import WireRequest

_DEBUG: Final = logging.DEBUG


class LogEvents:
    """Writes the events worth a log line to the ``worldrouter_async`` logger.

    A request's line is built only when DEBUG is on for that logger, so with logging at
    its default level a request costs one level check here.
    """

    __slots__ = ()

    #: The events it logs (`Hooks` gives it no others).
    event_kinds: Final = (
        RequestAnswered,
        RequestFailed,
        RetryScheduled,
        RateLimitPaused,
        BreakerOpened,
        BreakerClosed,
    )

    def on_event(self, event: Event) -> None:
        """Log `event` if it is of a kind that has a line (an `Observer` of `Hooks`)."""
        if type(event) is RequestAnswered:  # one per request: cheap first
            if not event.probe and logger.isEnabledFor(_DEBUG):
                _log_request(
                    event.request, str(event.status), event.elapsed, event.attempt, event.request_id
                )
            return
        match event:
            case RequestFailed(request=request, error=error, probe=probe) if logger.isEnabledFor(
                _DEBUG
            ):
                if probe:
                    logger.debug("outage probe failed: %s: %s", type(error).__name__, error)
                else:
                    outcome = f"failed ({type(error).__name__})"
                    _log_request(request, outcome, event.elapsed, event.attempt, None)
            case RetryScheduled(error=error, delay=delay, attempt=attempt):
                logger.info("retrying after %s in %.3fs (attempt %d)", error, delay, attempt)
            case RateLimitPaused(seconds=seconds):
                logger.info("rate limited: pausing all requests for %.3fs", seconds)
            case BreakerOpened(failures=failures):
                logger.info(
                    "the API looks unavailable (%d failures in a row): holding creates and "
                    "polls until a probe gets an answer",
                    failures,
                )
            case BreakerClosed(outage=outage):
                logger.info("the API answers again after %.3fs: resuming creates and polls", outage)


def _log_request(
    request: WireRequest, outcome: str, elapsed: float, attempt: int, request_id: str | None
) -> None:
    """The one debug line per request: never headers, so never the key."""
    logger.debug(
        "%s %s -> %s in %.1f ms (attempt %d, request id %s)",
        request.method,
        request.url.path,
        outcome,
        elapsed * 1000,
        attempt,
        request_id or "-",
    )
