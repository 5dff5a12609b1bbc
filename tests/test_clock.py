"""FakeClock: virtual time that moves by hand or jumps to the next timer when the loop is idle."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import anyio
import pytest

from worldrouter_async import Clock
from worldrouter_async._clock import SYSTEM_CLOCK
from worldrouter_async.testing import FakeClock
from worldrouter_async.testing._clock import FALLBACK_FACTOR

pytestmark = pytest.mark.anyio


def test_both_clocks_implement_the_protocol() -> None:
    """The system clock and the fake clock are interchangeable wherever a Clock is taken."""
    clocks: list[Clock] = [SYSTEM_CLOCK, FakeClock()]
    assert [type(c).__name__ for c in clocks] == ["SystemClock", "FakeClock"]
    assert repr(FakeClock(start=5.0)) == "<FakeClock now=5.0 timers=0>"


async def test_advance_fires_due_timers_in_order_at_their_own_time() -> None:
    """advance(s) runs each timer due on the way, earliest first, with now() at its time."""
    clock = FakeClock(autojump=False)
    fired: list[tuple[str, float]] = []
    clock.call_later(3.0, lambda: fired.append(("c", clock.now())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.now())))
    clock.call_later(2.0, lambda: fired.append(("b", clock.now())))
    clock.call_later(9.0, lambda: fired.append(("late", clock.now())))
    clock.advance(5.0)
    assert fired == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.now() == 5.0
    assert clock.next_deadline() == 9.0


async def test_timers_due_at_the_same_time_fire_in_scheduling_order() -> None:
    """Ties keep the order the timers were set in."""
    clock = FakeClock(autojump=False)
    fired: list[int] = []
    for index in range(5):
        clock.call_later(1.0, lambda index=index: fired.append(index))
    clock.advance(1.0)
    assert fired == [0, 1, 2, 3, 4]


async def test_a_cancelled_timer_never_fires_and_late_cancels_are_harmless() -> None:
    """cancel() before the time stops the callback; after it has run, cancel does nothing."""
    clock = FakeClock(autojump=False)
    fired: list[str] = []
    dropped = clock.call_later(1.0, lambda: fired.append("dropped"))
    kept = clock.call_later(2.0, lambda: fired.append("kept"))
    dropped.cancel()
    dropped.cancel()
    clock.advance(3.0)
    kept.cancel()
    assert fired == ["kept"]
    assert clock.next_deadline() == math.inf


async def test_many_cancelled_timers_are_pruned() -> None:
    """Cancelled timers do not pile up: the heap is rebuilt once they outnumber live ones."""
    clock = FakeClock(autojump=False)
    keep = clock.call_later(1.0, lambda: None)
    for _ in range(1000):
        clock.call_later(0.5, lambda: None).cancel()
    assert len(clock._timers) <= 2 + 64
    assert clock.next_deadline() == 1.0
    keep.cancel()


async def test_sleep_until_waits_for_advance_when_autojump_is_off() -> None:
    """Without autojump only advance() moves time; a sleeper wakes once it has."""
    clock = FakeClock(autojump=False)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(10.0)
        woke.append(clock.now())

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(sleeper)
        for _ in range(20):
            await asyncio.sleep(0)
        assert woke == []
        clock.advance(10.0)
    assert woke == [10.0]


async def test_autojump_wakes_sleepers_at_their_exact_deadlines() -> None:
    """With autojump, sleepers wake at exactly their deadlines, in order, in no real time."""
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(sleeper, "hour", 3600.0)
        task_group.start_soon(sleeper, "second", 1.0)
        task_group.start_soon(sleeper, "minute", 60.0)
    assert woke == [("second", 1.0), ("minute", 60.0), ("hour", 3600.0)]
    assert clock.jumps == 3


async def test_sleep_until_a_past_deadline_returns_without_moving_time() -> None:
    """A deadline already reached returns at once (after one yield) and sets no timer."""
    clock = FakeClock(start=5.0)
    await clock.sleep_until(4.0)
    await clock.sleep_until(5.0)
    assert clock.now() == 5.0
    assert clock.jumps == 0


async def test_autojump_waits_while_other_tasks_can_run() -> None:
    """Time does not move while any other task is runnable, however long it keeps busy."""
    clock = FakeClock()
    seen: list[float] = []

    async def busy() -> None:
        for _ in range(200):
            seen.append(clock.now())
            await asyncio.sleep(0)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(clock.sleep_until, 1.0)
        task_group.start_soon(busy)
    assert set(seen) == {0.0}
    assert clock.now() == 1.0


async def test_autojump_waits_for_loopback_io_in_the_same_loop() -> None:
    """Bytes in flight between a client and a server on loopback count as work, not idleness."""
    clock = FakeClock()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, anyio.create_task_group() as task_group:
        task_group.start_soon(clock.sleep_until, 5.0)
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            writer.close()
            await writer.wait_closed()
        assert clock.now() == 0.0
    assert clock.now() == 5.0


async def test_a_real_time_threshold_delays_the_jump_but_still_jumps() -> None:
    """autojump_threshold waits once in real time before each jump (for threads and processes)."""
    clock = FakeClock(autojump_threshold=0.001)
    await clock.sleep_until(2.0)
    assert clock.now() == 2.0
    assert clock.jumps == 1


async def test_a_raising_timer_is_reported_and_the_clock_goes_on() -> None:
    """A callback that raises goes to the loop's exception handler; later timers still fire."""
    clock = FakeClock(autojump=False)
    fired: list[str] = []
    loop = asyncio.get_running_loop()
    errors: list[BaseException | None] = []
    loop.set_exception_handler(lambda loop, context: errors.append(context.get("exception")))
    try:
        clock.call_later(1.0, lambda: 1 / 0)
        clock.call_later(2.0, lambda: fired.append("after"))
        clock.advance(2.0)
    finally:
        loop.set_exception_handler(None)
    assert fired == ["after"]
    assert [type(e) for e in errors] == [ZeroDivisionError]


def test_bad_arguments_are_refused() -> None:
    """Non-finite starts, negative advances, NaN delays and bad thresholds are ValueErrors."""
    with pytest.raises(ValueError, match="start"):
        FakeClock(start=math.inf)
    with pytest.raises(ValueError, match="autojump_threshold"):
        FakeClock(autojump_threshold=-1)
    with pytest.raises(ValueError, match="idle_iterations"):
        FakeClock(idle_iterations=0)
    clock = FakeClock(autojump=False)
    with pytest.raises(ValueError, match="advance"):
        clock.advance(-1.0)
    with pytest.raises(ValueError, match="nan"):
        clock.call_later(math.nan, lambda: None)


async def test_sleep_until_lands_exactly_on_its_deadline() -> None:
    """now() equals the deadline after sleep_until, even where now + (t - now) rounds past t."""
    clock = FakeClock(start=0.2)
    await clock.sleep_until(0.9)
    assert clock.now() == 0.9
    assert 0.2 + (0.9 - 0.2) != 0.9  # the rounding this guards against


class _LoopWithoutReadyQueue:
    """Stands in for uvloop: a loop whose ready queue the clock cannot see."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        self.scheduled.append((callback, args))

    def run_one_iteration(self) -> None:
        callback, args = self.scheduled.pop(0)
        callback(*args)


def test_without_a_visible_ready_queue_idle_means_quiet_iterations_since_last_use() -> None:
    """The fallback rule jumps after idle_iterations x FALLBACK_FACTOR iterations without use."""
    clock = FakeClock(autojump=False)
    fired: list[float] = []
    clock.call_later(7.0, lambda: fired.append(clock.now()))
    clock.autojump = True
    loop = _LoopWithoutReadyQueue()
    clock._watch(loop)  # type: ignore[arg-type]
    needed = 3 * FALLBACK_FACTOR
    for _ in range(needed - 1):
        loop.run_one_iteration()
    clock.now()  # a use of the clock is work: counting starts again
    for _ in range(needed - 1):
        loop.run_one_iteration()
    assert fired == []
    loop.run_one_iteration()
    assert fired == [7.0]
    assert clock.jumps == 1
