"""The outage breaker: opens on an outage, holds requests, probes one at a time, resumes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

import anyio
import pytest

from tests.conftest import SessionFactory
from worldrouter_async import (
    AmbiguousCreateError,
    APIConnectionError,
    RetryPolicy,
    Session,
    TaskHandle,
    WorldRouterError,
)
from worldrouter_async._breaker import DEFAULT_THRESHOLD, Breaker
from worldrouter_async._hooks import Hooks
from worldrouter_async._log_events import LogEvents
from worldrouter_async._stats import Counters
from worldrouter_async.testing import Emulator

pytestmark = pytest.mark.anyio

CONCURRENCY = 8


class _Timer:
    def __init__(self, cancelled: set[int], order: int) -> None:
        self._cancelled = cancelled
        self._order = order

    def cancel(self) -> None:
        self._cancelled.add(self._order)


class StepClock:
    """Virtual time that moves only when the test calls `advance`, timers run in order.

    Just big enough for the breaker (``now``, ``call_later``, ``sleep_until``), so each
    test says exactly when time moves.
    """

    def __init__(self) -> None:
        self.time = 0.0
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._cancelled: set[int] = set()
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        event = asyncio.Event()
        self.call_later(deadline - self.time, event.set)
        await event.wait()

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        order = next(self._order)
        heapq.heappush(self._timers, (self.time + max(delay, 0.0), order, callback))
        return _Timer(self._cancelled, order)

    async def advance(self, seconds: float) -> None:
        """Move time on, run the timers now due, and let woken tasks run."""
        self.time += seconds
        while self._timers and self._timers[0][0] <= self.time:
            _, order, callback = heapq.heappop(self._timers)
            if order not in self._cancelled:
                callback()
        for _ in range(5):
            await asyncio.sleep(0)


class Probe:
    """A probe whose answers the test releases one at a time."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.answers: asyncio.Queue[bool] = asyncio.Queue()

    async def __call__(self) -> bool:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.answers.get()
        finally:
            self.in_flight -= 1


def _breaker(clock: StepClock, probe: Probe, counters: Counters, patience: float = 60.0) -> Breaker:
    breaker = Breaker(
        clock,
        probe=probe,
        backoff=lambda number: float(number),  # probe n comes n seconds after the last
        patience=patience,
        hooks=Hooks(counters, LogEvents()),
    )
    breaker.record_success()  # the API has answered before: failures from here are an outage
    return breaker


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_opens_only_after_threshold_failures_in_a_row() -> None:
    """Four failures leave it closed, a success resets the count, five in a row open it."""
    counters = Counters()
    breaker = _breaker(StepClock(), Probe(), counters)
    for _ in range(DEFAULT_THRESHOLD - 1):
        breaker.record_failure()
    breaker.record_success()
    assert not breaker.is_open
    assert breaker.failures == 0
    for _ in range(DEFAULT_THRESHOLD):
        breaker.record_failure()
    assert breaker.is_open
    assert counters.breaker_opens == 1
    breaker.record_failure()
    assert counters.breaker_opens == 1  # failures while open do not reopen it


def test_opening_and_closing_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """One INFO line when the breaker opens and one when it closes, none per failure."""
    breaker = _breaker(StepClock(), Probe(), Counters())
    with caplog.at_level(logging.INFO, logger="worldrouter_async"):
        for _ in range(DEFAULT_THRESHOLD + 3):
            breaker.record_failure()
        breaker.record_success()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "unavailable (5 failures in a row)" in messages[0]
    assert "answers again" in messages[1]


def test_a_late_answer_to_an_older_request_does_not_reset_the_count() -> None:
    """Only a request sent after the latest failure proves the server answers now."""
    breaker = _breaker(StepClock(), Probe(), Counters())
    sent_before = breaker.epoch
    for _ in range(DEFAULT_THRESHOLD - 1):
        breaker.record_failure()
    breaker.record_success(sent_before)
    assert breaker.failures == DEFAULT_THRESHOLD - 1
    sent_after = breaker.epoch
    breaker.record_success(sent_after)
    assert breaker.failures == 0


async def test_waiters_are_held_and_one_probe_at_a_time_tests_recovery() -> None:
    """Many waiters, one probe in flight; a failed probe backs off; a good one frees all."""
    clock, probe, counters = StepClock(), Probe(), Counters()
    breaker = _breaker(clock, probe, counters)
    for _ in range(DEFAULT_THRESHOLD):
        breaker.record_failure()
    released: list[int] = []

    async def waiter(number: int) -> None:
        await breaker.wait()
        released.append(number)

    async with anyio.create_task_group() as task_group:
        for number in range(10):
            task_group.start_soon(waiter, number)
        await _settle()
        assert probe.calls == 0  # the first probe is due one backoff after opening
        await clock.advance(1.0)
        assert probe.calls == 1
        assert probe.in_flight == 1
        probe.answers.put_nowait(False)
        await _settle()
        assert released == []
        assert breaker.is_open
        await clock.advance(1.0)
        assert probe.calls == 1  # the second probe waits two seconds, not one
        await clock.advance(1.0)
        assert probe.calls == 2
        probe.answers.put_nowait(True)
    assert sorted(released) == list(range(10))
    assert not breaker.is_open
    assert probe.most_in_flight == 1
    assert counters.breaker_probes == 2


async def test_a_waiter_gives_up_after_its_patience() -> None:
    """An outage that outlasts the patience lets the request go (and fail normally)."""
    clock, probe = StepClock(), Probe()
    breaker = _breaker(clock, probe, Counters(), patience=2.5)
    for _ in range(DEFAULT_THRESHOLD):
        breaker.record_failure()
    done = asyncio.Event()

    async def waiter() -> None:
        await breaker.wait()
        done.set()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(waiter)
        await clock.advance(1.0)
        probe.answers.put_nowait(False)
        await clock.advance(1.0)
        assert not done.is_set()
        await clock.advance(2.0)  # the next probe time is past the patience
        assert done.is_set()
    assert breaker.is_open


async def test_a_cancelled_probe_hands_over_to_another_waiter() -> None:
    """If the probing request is cancelled, the next probe comes from a remaining waiter."""
    clock, probe = StepClock(), Probe()
    breaker = _breaker(clock, probe, Counters())
    for _ in range(DEFAULT_THRESHOLD):
        breaker.record_failure()
    prober_scope = anyio.CancelScope()

    async def prober() -> None:
        with prober_scope:
            await breaker.wait()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(prober)
        await clock.advance(1.0)
        assert probe.in_flight == 1
        task_group.start_soon(breaker.wait)
        prober_scope.cancel()
        await _settle()
        assert probe.in_flight == 0
        await clock.advance(1.0)
        await clock.advance(1.0)
        assert probe.calls == 2
        probe.answers.put_nowait(True)
    assert not breaker.is_open


# --- over sockets, against the emulator ---------------------------------------------------


async def _outcomes(handles: list[TaskHandle]) -> tuple[int, int, int]:
    """(completed, ambiguous creates, other errors) once every handle has finished."""
    completed = ambiguous = other = 0
    for handle in handles:
        try:
            await handle
        except AmbiguousCreateError:
            ambiguous += 1
        except WorldRouterError:
            other += 1
        else:
            completed += 1
    return completed, ambiguous, other


@pytest.mark.parametrize("kind", ["502", "504"])
async def test_gateway_outage_bounds_ambiguous_creates_by_those_in_flight(
    make_session: SessionFactory, emulator: Emulator, kind: str
) -> None:
    """A 502/504 outage mid-burst: a handful of creates are ambiguous, the rest wait, resume."""
    total = 200
    await emulator.outage(kind, seconds=0.2, after_creates=40)  # type: ignore[arg-type]
    async with make_session() as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"p{i}"} for i in range(total)],
            concurrency=CONCURRENCY,
        )
        completed, ambiguous, other = await _outcomes(handles)
        stats = session.stats
    assert stats.breaker_opens >= 1
    assert stats.breaker_probes >= 1
    # Without the breaker every create sent during the outage would be ambiguous.
    assert 1 <= ambiguous <= CONCURRENCY + DEFAULT_THRESHOLD - 1
    assert (completed, other) == (total - ambiguous, 0)
    assert emulator.counters.creates == total - ambiguous  # a gateway error created nothing


async def test_refused_connections_pause_creates_until_the_api_is_back(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """A dead server (refused connections) outlasting the retries fails no create."""
    total = 120
    await emulator.outage("refuse", seconds=0.3, after_creates=30)
    async with make_session() as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"p{i}"} for i in range(total)],
            concurrency=CONCURRENCY,
        )
        completed, ambiguous, other = await _outcomes(handles)
        stats = session.stats
    assert stats.breaker_opens >= 1
    # Requests cut off when the server died, and at most four sent before the breaker opened.
    assert ambiguous <= CONCURRENCY + DEFAULT_THRESHOLD - 1
    assert other == 0
    assert completed == total - ambiguous
    assert emulator.counters.outages == 1


async def test_polls_wait_out_an_outage(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator
) -> None:
    """Tasks pending when the API goes down still complete once it is back (on virtual
    time, so every task is surely still pending when the outage begins)."""
    async with make_clocked_session() as session:
        handles = [await session.submit("gpt-image-2", f"p{i}") for i in range(20)]
        await clocked_emulator.outage("503", seconds=0.2)
        results = [await handle for handle in handles]
        stats = session.stats
    assert len(results) == 20
    assert stats.breaker_opens == 1
    # Held polls: the ones in flight (one per task), those before the breaker opened, probes.
    held = len(handles) + DEFAULT_THRESHOLD - 1 + stats.breaker_probes
    assert DEFAULT_THRESHOLD <= clocked_emulator.counters.outage_answers <= held


async def test_closing_the_session_releases_requests_held_by_an_outage(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """A create waiting out an outage ends when the session closes, not after the patience."""
    retry = RetryPolicy(attempts=DEFAULT_THRESHOLD + 1, base=0.001, cap=0.01)
    async with make_session(retry=retry) as session, anyio.create_task_group() as task_group:
        await session.tasks.create("gpt-image-2", "before the outage")  # the API answered once
        await emulator.outage("503", seconds=3600)

        async def create() -> None:
            with pytest.raises(RuntimeError, match=r"not open|closed"):
                await session.tasks.create("gpt-image-2", "a star")

        task_group.start_soon(create)
        while not session._api.breaker.is_open:
            await anyio.sleep(0.001)
        await session.aclose()
    assert emulator.counters.creates == 1


async def test_with_retry_ambiguous_an_outage_loses_no_create(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """Deduplicating server: creates cut off by a 502 outage are resent after it, none lost."""
    total = 120
    await emulator.outage("502", seconds=0.2, after_creates=30)
    async with make_session(retry_ambiguous_creates=True) as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"p{i}"} for i in range(total)],
            concurrency=CONCURRENCY,
        )
        completed, ambiguous, other = await _outcomes(handles)
        assert session.stats.breaker_opens >= 1
    assert (completed, ambiguous, other) == (total, 0, 0)
    assert emulator.counters.creates == total


async def test_an_api_never_reached_fails_at_once_instead_of_waiting() -> None:
    """Before any answer, failures are a setting to fix: nothing waits on the open breaker."""
    clock, counters = StepClock(), Counters()
    breaker = Breaker(clock, probe=Probe(), backoff=float, patience=600.0, hooks=Hooks(counters))
    for _ in range(DEFAULT_THRESHOLD):
        breaker.record_failure()
    assert breaker.is_open
    with anyio.fail_after(5):  # returns without time moving: no probe, no patience
        await breaker.wait()
    assert counters.breaker_probes == 0


async def test_an_unreachable_api_fails_creates_without_waiting_out_the_patience(
    free_tcp_port: int,
) -> None:
    """Creates to a port nobody listens on end with APIConnectionError, not a long hold."""
    retry = RetryPolicy(attempts=DEFAULT_THRESHOLD + 2, base=0.001, cap=0.01)
    async with Session("k", f"http://127.0.0.1:{free_tcp_port}/v1", retry=retry) as session:
        with anyio.fail_after(30), pytest.raises(APIConnectionError):
            await session.tasks.create("gpt-image-2", "a star")
        assert session.stats.breaker_opens == 1
        assert session.stats.breaker_probes == 0
