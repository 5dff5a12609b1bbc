"""The single poller: one coroutine for any number of tasks, failures, deadlines, shutdown."""

from __future__ import annotations

import asyncio
import math
from itertools import pairwise

import anyio
import pytest

from worldrouter_async import (
    AmbiguousCreateError,
    InvalidRequestError,
    PollPolicy,
    Session,
    SessionClosedError,
    TaskCancelledError,
    TaskFailedError,
    TaskHandle,
    TaskNotFoundError,
    TaskTimeoutError,
)
from worldrouter_async._poller import POLL_TASK_NAME
from worldrouter_async.testing import Emulator

from .conftest import SessionFactory

pytestmark = pytest.mark.anyio


async def test_one_poller_regardless_of_pending_count(session: Session) -> None:
    """500 pending tasks run in one poller plus at most max_inflight_polls (64) polls."""
    handles = await session.submit_many(
        [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(500)]
    )
    assert session.stats.pending == 500
    most_polls = 0
    for _ in range(50):  # sample across several poll rounds
        await anyio.sleep(0.002)
        sdk = [t for t in asyncio.all_tasks() if t.get_name() == POLL_TASK_NAME]
        most_polls = max(most_polls, len(sdk))
        pollers = [t for t in asyncio.all_tasks() if "worldrouter-async poller" in t.get_name()]
        assert len(pollers) == 1
    assert 0 < most_polls <= 64
    for handle in handles:
        handle.cancel()


async def test_thousand_tasks_resolve_with_correct_urls(
    session: Session, emulator: Emulator
) -> None:
    """1,000 concurrent tasks each resolve to their own stored images."""
    handles = await session.submit_many(
        [{"model": "gpt-image-2", "prompt": f"image {i}", "n": 1 + i % 3} for i in range(1000)],
        concurrency=64,
    )
    results = [await handle for handle in handles]
    for handle, result in zip(handles, results, strict=True):
        assert result.task_id == handle.task_id
        assert result.urls == tuple(
            f"{emulator.storage_url}/images/{handle.task_id}/{i}.png"
            for i in range(emulator.tasks[result.task_id].n)
        )
        assert handle.done()
        assert handle.status == "completed"
    stats = session.stats
    assert (stats.creates, stats.completed, stats.pending) == (1000, 1000, 0)
    assert stats.usage.output_tokens == sum(100 * emulator.tasks[r.task_id].n for r in results)


async def test_submit_many_keeps_order_and_maps_failures(
    session: Session, emulator: Emulator
) -> None:
    """One handle per request in input order; bad requests and failed creates raise on await."""
    emulator.inject("500", route="create")  # the first create is ambiguous
    requests = [
        {"model": "gpt-image-2", "prompt": "first"},
        {"model": "gpt-image-2", "prompt": ""},
        {"model": "gpt-image-2", "prompt": "third"},
        {"model": "gpt-image-2", "prompt": "fourth", "qualty": "high"},
    ]
    handles = await session.submit_many(requests, concurrency=1)
    assert len(handles) == 4
    assert [h.request.prompt if h.request else None for h in handles] == [
        "first",
        None,
        "third",
        None,
    ]
    with pytest.raises(AmbiguousCreateError):
        await handles[0]
    with pytest.raises(InvalidRequestError, match="prompt must be a non-empty string"):
        await handles[1]
    assert (await handles[2]).task_id == handles[2].task_id
    with pytest.raises(InvalidRequestError, match="qualty"):
        await handles[3]


async def test_failed_task_raises_task_failed_error(session: Session) -> None:
    """A failed task raises with its task_id and the server's error code."""
    handle = await session.submit("gpt-image-2", "[fail:content_policy] a star")
    with pytest.raises(TaskFailedError, match="content_policy") as caught:
        await handle
    assert caught.value.task_id == handle.task_id
    assert caught.value.code == "content_policy"
    assert session.stats.failed == 1


async def test_expired_task_raises_task_not_found(session: Session, emulator: Emulator) -> None:
    """A 404 during polling ends that handle with TaskNotFoundError."""
    handle = await session.submit("gpt-image-2", "[never] a star")
    assert handle.task_id is not None
    emulator.expire(handle.task_id)
    with pytest.raises(TaskNotFoundError) as caught:
        await handle
    assert caught.value.task_id == handle.task_id


async def test_deadline_raises_task_timeout_and_the_task_can_be_tracked_again(
    session: Session, emulator: Emulator
) -> None:
    """Past its deadline a handle times out; tracking the ID again gets the result."""
    handle = await session.submit("gpt-image-2", "[never] slow", timeout=0.05)
    with pytest.raises(TaskTimeoutError, match=r"Session\.track") as caught:
        await handle
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.task_id == handle.task_id
    assert handle.task_id is not None
    emulator.force_status(handle.task_id, None)
    emulator.tasks[handle.task_id].outcome = "completed"
    result = await session.track(handle.task_id)
    assert result.task_id == handle.task_id


async def test_unknown_status_keeps_the_task_pending(session: Session, emulator: Emulator) -> None:
    """A status the SDK does not know is shown and polled on until it turns terminal."""
    handle = await session.submit("gpt-image-2", "[never] x")
    assert handle.task_id is not None
    emulator.force_status(handle.task_id, "upscaling")
    with anyio.fail_after(5):
        while handle.status != "upscaling":
            await anyio.sleep(0.005)
    polls = emulator.counters.polls_by_task[handle.task_id]
    await anyio.sleep(0.05)
    assert not handle.done()
    assert emulator.counters.polls_by_task[handle.task_id] > polls
    emulator.force_status(handle.task_id, "completed")
    assert (await handle).task_id == handle.task_id


async def test_cancelling_one_waiter_stops_only_that_task(
    session: Session, emulator: Emulator
) -> None:
    """A cancelled waiter stops tracking its ID; the other tasks keep resolving."""
    stuck = await session.submit("gpt-image-2", "[never] stuck")
    other = await session.submit("gpt-image-2", "fine")
    with anyio.move_on_after(0.05) as scope:
        await stuck
    assert scope.cancelled_caught
    assert stuck.done()
    with pytest.raises(TaskCancelledError):
        stuck.result()
    assert stuck.task_id is not None
    polls = emulator.counters.polls_by_task[stuck.task_id]
    assert (await other).task_id == other.task_id
    await anyio.sleep(0.05)
    assert emulator.counters.polls_by_task[stuck.task_id] == polls


async def test_a_second_waiter_keeps_the_handle_alive(session: Session) -> None:
    """Cancelling one of two waiters leaves the handle tracked for the other."""
    handle = await session.submit("gpt-image-2", "shared")
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(handle.wait)
        with anyio.move_on_after(0.001):
            await handle
    assert (await handle).task_id == handle.task_id


async def test_handle_cancel(session: Session) -> None:
    """handle.cancel() ends the handle at once and is a no-op once done."""
    handle = await session.submit("gpt-image-2", "[never] x")
    assert handle.cancel()
    assert not handle.cancel()
    with pytest.raises(TaskCancelledError, match=r"Session\.track it again"):
        await handle
    assert session.stats.pending == 0


async def test_closing_ends_every_pending_handle(
    make_session: SessionFactory,
) -> None:
    """Leaving async with fails pending handles with SessionClosedError, without hanging."""
    async with make_session() as session:
        handles = [await session.submit("gpt-image-2", f"[never] {i}") for i in range(5)]
        waiter_errors: list[BaseException] = []

        async def wait(handle: TaskHandle) -> None:
            try:
                await handle
            except SessionClosedError as exc:
                waiter_errors.append(exc)

        async with anyio.create_task_group() as task_group:
            for handle in handles:
                task_group.start_soon(wait, handle)
            await anyio.sleep(0.02)
            await session.aclose()
    assert len(waiter_errors) == 5
    assert {getattr(e, "task_id", None) for e in waiter_errors} == {h.task_id for h in handles}
    assert not [t for t in asyncio.all_tasks() if "worldrouter-async poller" in t.get_name()]


async def test_close_from_another_task(make_session: SessionFactory) -> None:
    """aclose() works from a task other than the one that opened the session."""
    async with make_session() as session:
        handle = await session.submit("gpt-image-2", "[never] x")
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(session.aclose)
        with pytest.raises(SessionClosedError):
            await handle


async def test_429_pauses_all_polls_until_retry_after(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """After one 429 no poll of any task is sent until its Retry-After has passed."""
    async with make_session() as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(20)]
        )
        await anyio.sleep(0.02)
        emulator.inject("429", route="poll", retry_after=0.2)
        with anyio.fail_after(5):
            while session.stats.rate_limit_pauses == 0:
                await anyio.sleep(0.001)
        await anyio.sleep(0.3)
        for handle in handles:
            handle.cancel()
    polls = [t for t, route, _ in emulator.requests if route == "poll"]
    # 20 tasks polled every ~20 ms normally leave gaps of a few ms; the pause leaves one gap
    # of the whole Retry-After, from the 429 to the first poll after it.
    gaps = sorted(b - a for a, b in pairwise(polls))
    assert gaps[-1] >= 0.19
    assert gaps[-2] < 0.05
    assert session.stats.rate_limit_pauses == 1


async def test_recovers_from_5xx_and_drops_with_every_task_resolved(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """Random 5xx and dropped connections only delay tasks; all of them complete."""
    async with make_session() as session:
        handles = await session.submit_many(
            [{"model": "gemini-2.5-flash-image", "prompt": f"p{i}"} for i in range(100)]
        )
        emulator.fail_rate, emulator.drop_rate = 0.15, 0.05
        results = [await h for h in handles]
    assert len({r.task_id for r in results}) == 100
    assert sum(emulator.counters.faults.values()) > 0
    assert emulator.counters.creates == 100


async def test_as_completed_yields_in_completion_order(session: Session) -> None:
    """as_completed yields each handle once, finished ones first."""
    slow = await session.submit("gpt-image-2", "[never] slow")
    fast = [await session.submit("gemini-2.5-flash-image", f"fast {i}") for i in range(3)]
    order: list[TaskHandle] = []
    async for handle in session.as_completed([slow, *fast]):
        order.append(handle)
        if len(order) == 3:
            slow.cancel()
    assert set(order[:3]) == set(fast)
    assert order[3] is slow


async def test_poll_cost_follows_the_policy(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """A never-ending task polled for ~0.3 s costs about log-many polls, not one per tick."""
    policy = PollPolicy(initial_delay=0.01, factor=2.0, max_interval=10.0, jitter=0.0)
    async with make_session(poll=policy) as session:
        handle = await session.submit("gpt-image-2", "[never] x", timeout=0.3)
        with pytest.raises(TaskTimeoutError):
            await handle
    # polls at 0.01, 0.03, 0.07, 0.15, then the deadline 0.3 (capped): 5 polls.
    assert handle.task_id is not None
    assert emulator.counters.polls_by_task[handle.task_id] == 5


async def test_timeout_must_be_positive(session: Session) -> None:
    """A zero or NaN timeout is refused before anything is sent."""
    for bad in (0, -1, math.nan):
        with pytest.raises(InvalidRequestError, match="timeout must be positive"):
            session.track("imgtask_x", timeout=bad)


async def test_adaptive_first_poll_skips_polls_that_cannot_succeed(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """Once a model's durations are known, its tasks are first polled near the fastest tenth."""

    async def mean_polls_of_second_wave(adaptive: bool) -> float:
        policy = PollPolicy(
            initial_delay=0.005, factor=1.5, max_interval=0.02, jitter=0.0, adaptive=adaptive
        )
        async with make_session(poll=policy) as session:
            for _ in range(2):  # the first wave teaches, the second is measured
                requests = [{"model": "gpt-image-2", "prompt": f"w {i}"} for i in range(20)]
                handles = await session.submit_many(requests)
                results = [await handle for handle in handles]
        return sum(emulator.counters.polls_by_task[r.task_id] for r in results) / len(results)

    fixed = await mean_polls_of_second_wave(adaptive=False)
    adaptive = await mean_polls_of_second_wave(adaptive=True)
    assert adaptive <= fixed - 0.5, (adaptive, fixed)


async def test_a_cold_burst_polls_only_its_probes_until_one_finishes(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """With nothing of a shape finished yet, 8 tasks are polled; the rest wait (bounded)."""
    policy = PollPolicy(initial_delay=0.005, factor=1.5, max_interval=0.05, jitter=0.0)
    async with make_session(poll=policy) as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(30)]
        )
        await anyio.sleep(0.1)  # well before the park limit of 4 x 0.05 s
        assert len(emulator.counters.polls_by_task) == 8
        await anyio.sleep(0.25)  # past the park limit: every task has been polled
        assert len(emulator.counters.polls_by_task) == 30
        for handle in handles:
            handle.cancel()


async def test_parked_tasks_are_released_when_a_probe_finishes(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """The first finished probe releases the parked tasks long before the park limit."""
    policy = PollPolicy(initial_delay=0.005, factor=1.5, max_interval=0.25, jitter=0.0)
    async with make_session(poll=policy) as session:
        probes = [await session.submit("gpt-image-2", f"probe {i}") for i in range(8)]
        parked = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(12)]
        )
        for probe in probes:
            await probe
        await anyio.sleep(0.2)  # the park limit is 4 x 0.25 = 1 s
        assert all(emulator.counters.polls_by_task[h.task_id or ""] for h in parked)
        for handle in parked:
            handle.cancel()
