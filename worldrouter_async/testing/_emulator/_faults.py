"""The emulator's faults: injected and random ones, the rate limit, and what each answers.

Which request gets which fault is decided here; how a fault reaches the client is split
in two: answer faults become an `EmulatedResponse` (`fault_answer`), connection faults
(``drop``, ``hang``) are played by `EmulatedAPI` as `NoAnswer`.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from typing import Final, Literal

from attrs import define

from ..._clock import Clock
from ._messages import EmulatedResponse, error_answer, text_answer

Route = Literal["create", "poll", "any", "storage"]
OutageKind = Literal["refuse", "502", "503", "504"]
FaultKind = Literal[
    "413",
    "429",
    "500",
    "502_html",
    "503",
    "empty_200",
    "bad_json",
    "drop",
    "hang",
    "drop_after_create",
    "500_after_create",
    "hang_after_create",
]

_SERVER_ERROR: Final = "The server had an error processing your request."


@define
class Fault:
    """One injected fault: the next matching request gets `kind` instead of a normal answer."""

    kind: FaultKind
    route: Route = "any"
    retry_after: float | None = None


class FaultQueue:
    """Faults waiting for their request, in injection order, plus seeded random ones."""

    def __init__(self) -> None:
        self._waiting: deque[Fault] = deque()

    def inject(self, fault: Fault, count: int) -> None:
        """Queue `count` copies of `fault`."""
        self._waiting.extend(fault for _ in range(count))

    def take(self, route: Route) -> Fault | None:
        """The first queued fault for `route` (``any`` ones never hit the storage origin)."""
        for fault in self._waiting:
            if fault.route in (route, "any") and (route != "storage" or fault.route == "storage"):
                self._waiting.remove(fault)
                return fault
        return None

    @staticmethod
    def roll(rng: random.Random, fail_rate: float, drop_rate: float) -> Fault | None:
        """A random 500/502/503 with probability `fail_rate`, a drop with `drop_rate`."""
        roll = rng.random()
        if roll < fail_rate:
            return Fault(rng.choice(("500", "502_html", "503")))
        if roll < fail_rate + drop_rate:
            return Fault("drop")
        return None


class TokenBucket:
    """A rate limit of `rate` requests per second, `burst` deep, on `clock`."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.capacity = burst
        self.tokens = burst
        self.clock = clock
        self.updated = clock.now()

    def take(self) -> float:
        """Take a token; 0.0 if granted, else the seconds until one is available."""
        now = self.clock.now()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Waits:
    """Slow answers, hangs and outages waiting on `clock`, all ended at once by `release`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.released = False
        self._sleepers: set[asyncio.Event] = set()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` on the clock (inf: until `release`); at once once released."""
        if self.released:
            return
        woken = asyncio.Event()
        self._sleepers.add(woken)
        timer = self.clock.call_later(seconds, woken.set) if math.isfinite(seconds) else None
        try:
            await woken.wait()
        finally:
            self._sleepers.discard(woken)
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        """Wake every waiter now, and make later waits return at once."""
        self.released = True
        for woken in self._sleepers:
            woken.set()


def rate_limited_answer(wait: float) -> EmulatedResponse:
    """A 429 telling the client to wait `wait` seconds (Retry-After and retry-after-ms)."""
    return error_answer(
        429,
        "Rate limit reached for requests",
        "rate_limit_exceeded",
        "requests",
        ("Retry-After", str(max(1, math.ceil(wait)))),
        ("retry-after-ms", f"{wait * 1000:.0f}"),
    )


def gateway_answer(status: int) -> EmulatedResponse:
    """The HTML page a gateway answers while the API behind it is down."""
    return text_answer(
        status, f"<html><body><h1>{status} from the gateway</h1></body></html>", html=True
    )


def fault_answer(kind: FaultKind) -> EmulatedResponse | None:
    """The answer fault `kind` gives, or None for a fault that loses the connection instead."""
    if kind in ("500", "500_after_create", "503"):
        status = 503 if kind == "503" else 500
        return error_answer(status, _SERVER_ERROR, "server_error", "server_error")
    if kind == "413":  # what a proxy in front of the API says to an oversized body
        return error_answer(
            413, "Request body too large", "payload_too_large", "invalid_request_error"
        )
    if kind == "502_html":
        return text_answer(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", html=True)
    if kind == "empty_200":
        return EmulatedResponse(200, (("Content-Type", "application/json"),))
    if kind == "bad_json":
        return EmulatedResponse(
            200, (("Content-Type", "application/json; charset=utf-8"),), b'{"id": "imgtask_'
        )
    return None
