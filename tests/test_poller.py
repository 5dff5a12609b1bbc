"""The single poller: one coroutine for any number of tasks, failures, deadlines, shutdown."""

from __future__ import annotations

import asyncio
import math

import anyio
import pytest

from worldrouter_async import (
    AmbiguousCreateError,
    APITimeoutError,
    AuthenticationError,
    InvalidRequestError,
    Limits,
    PollerFailedError,
    PollPolicy,
    RetryPolicy,
    ServerError,
    Session,
    SessionClosedError,
    TaskCancelledError,
    TaskFailedError,
    TaskHandle,
    TaskNotFoundError,
    TaskTimeoutError,
    Timeouts,
)
from worldrouter_async._poll_workers import POLL_TASK_NAME, STUCK_AFTER, PollWorkers
from worldrouter_async.testing import FAST_POLL, Emulator, FakeClock

from .conftest import SessionFactory
from .hostile import HostileServer

pytestmark = pytest.mark.anyio


async def test_one_poller_regardless_of_pending_count(
    make_clocked_session: SessionFactory, clock: FakeClock
) -> None:
    """500 pending tasks run in one poller plus exactly max_inflight_polls (64) poll workers."""
    async with make_clocked_session() as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(500)]
        )
        assert session.stats.pending == 500
        for step in range(1, 51):  # sample across several poll rounds
            await clock.sleep_until(step * 0.002)
            sdk = [t for t in asyncio.all_tasks() if t.get_name() == POLL_TASK_NAME]
            assert len(sdk) == 64
            pollers = [t for t in asyncio.all_tasks() if "worldrouter-async poller" in t.get_name()]
            assert len(pollers) == 1
        assert session.stats.polls >= 500
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
    # Wall time, no window asserted: only that the handle ends by timeout, however late.
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


async def test_unknown_status_keeps_the_task_pending(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A status the SDK does not know is shown and polled on until it turns terminal."""
    async with make_clocked_session() as session:
        handle = await session.submit("gpt-image-2", "[never] x")
        assert handle.task_id is not None
        clocked_emulator.force_status(handle.task_id, "upscaling")
        while handle.status != "upscaling":
            await clock.sleep_until(clock.now() + 0.005)
        polls = clocked_emulator.counters.polls_by_task[handle.task_id]
        await clock.sleep_until(clock.now() + 0.05)  # FAST_POLL polls every 20 ms at most
        assert not handle.done()
        assert clocked_emulator.counters.polls_by_task[handle.task_id] >= polls + 2
        clocked_emulator.force_status(handle.task_id, "completed")
        assert (await handle).task_id == handle.task_id


async def test_cancelling_one_waiter_stops_only_that_task(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A cancelled waiter stops tracking its ID; the other tasks keep resolving."""
    async with make_clocked_session() as session:
        stuck = await session.submit("gpt-image-2", "[never] stuck")
        other = await session.submit("gpt-image-2", "fine")
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(stuck.wait)
            await clock.sleep_until(0.05)
            task_group.cancel_scope.cancel()
        assert stuck.done()
        with pytest.raises(TaskCancelledError):
            stuck.result()
        assert stuck.task_id is not None
        await clock.sleep_until(clock.now() + 0.001)  # a poll already sent lands first
        polls = clocked_emulator.counters.polls_by_task[stuck.task_id]
        assert polls > 0
        assert (await other).task_id == other.task_id
        await clock.sleep_until(clock.now() + 1.0)
        assert clocked_emulator.counters.polls_by_task[stuck.task_id] == polls


async def test_a_second_waiter_keeps_the_handle_alive(session: Session) -> None:
    """Cancelling one of two waiters leaves the handle tracked for the other."""
    handle = await session.submit("gpt-image-2", "shared")
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(handle.wait)
        with anyio.move_on_after(0.001):  # wall time: either side of this race must pass
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
            await anyio.sleep(0.02)  # wall time: waiters that start late still see the close
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
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """After one 429 no poll of any task is sent until its Retry-After has passed."""
    async with make_clocked_session() as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(20)]
        )
        await clock.sleep_until(0.02)
        clocked_emulator.inject("429", route="poll", retry_after=0.2)
        while session.stats.rate_limit_pauses == 0:
            await clock.sleep_until(clock.now() + 0.001)
        limited_at = session._api.throttle.paused_until - 0.2
        await clock.sleep_until(limited_at + 0.3)
        for handle in handles:
            handle.cancel()
    polls = [t for t, route, _ in clocked_emulator.requests if route == "poll"]
    # Polls sent at the same virtual instant as the limited one may land after it; none later.
    tick = 1e-9
    assert not [t for t in polls if limited_at + tick < t < limited_at + 0.2 - tick]
    assert min(t for t in polls if t > limited_at + tick) == pytest.approx(limited_at + 0.2)
    assert session.stats.rate_limit_pauses == 1


async def test_recovers_from_5xx_and_drops_with_every_task_resolved(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """Random 5xx and dropped connections only delay tasks; all of them complete."""
    async with make_clocked_session() as session:
        handles = await session.submit_many(
            [{"model": "gemini-2.5-flash-image", "prompt": f"p{i}"} for i in range(100)]
        )
        assert clock.now() == 0.0  # every create answered before any task could finish
        clocked_emulator.fail_rate, clocked_emulator.drop_rate = 0.15, 0.05
        results = [await h for h in handles]
    assert len({r.task_id for r in results}) == 100
    assert sum(clocked_emulator.counters.faults.values()) > 0
    assert clocked_emulator.counters.creates == 100


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
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A never-ending task is polled exactly on the policy's schedule, then times out."""
    policy = PollPolicy(initial_delay=1.0, factor=2.0, max_interval=10.0, jitter=0.0)
    async with make_clocked_session(poll=policy) as session:
        handle = await session.submit("gpt-image-2", "[never] x", timeout=30)
        with pytest.raises(TaskTimeoutError):
            await handle
        assert clock.now() == 30.0
    # intervals 1, 2, 4, 8, then capped at 10; the next poll (35) is past the deadline.
    assert [t for t, route, _ in clocked_emulator.requests if route == "poll"] == [
        1.0,
        3.0,
        7.0,
        15.0,
        25.0,
    ]


async def test_timeout_must_be_positive(session: Session) -> None:
    """A zero or NaN timeout is refused before anything is sent."""
    for bad in (0, -1, math.nan):
        with pytest.raises(InvalidRequestError, match="timeout must be positive"):
            session.track("imgtask_x", timeout=bad)


async def test_adaptive_first_poll_skips_polls_that_cannot_succeed(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator
) -> None:
    """Once a model's durations are known, its tasks skip the polls that cannot succeed."""

    async def mean_polls_of_second_wave(adaptive: bool) -> float:
        policy = PollPolicy(
            initial_delay=0.005, factor=1.5, max_interval=0.02, jitter=0.0, adaptive=adaptive
        )
        async with make_clocked_session(poll=policy) as session:
            for _ in range(2):  # the first wave teaches, the second is measured
                requests = [{"model": "gpt-image-2", "prompt": f"w {i}"} for i in range(20)]
                handles = await session.submit_many(requests)
                results = [await handle for handle in handles]
        polls = clocked_emulator.counters.polls_by_task
        return sum(polls[r.task_id] for r in results) / len(results)

    fixed = await mean_polls_of_second_wave(adaptive=False)
    adaptive = await mean_polls_of_second_wave(adaptive=True)
    assert adaptive <= fixed - 0.3, (adaptive, fixed)


async def test_a_cold_burst_polls_only_its_probes_until_one_finishes(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """With nothing of a shape finished yet, 8 tasks are polled; the rest wait (bounded)."""
    policy = PollPolicy(initial_delay=0.005, factor=1.5, max_interval=0.05, jitter=0.0)
    async with make_clocked_session(poll=policy) as session:
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(30)]
        )
        await clock.sleep_until(0.199)  # just before the park limit of 4 x 0.05 s
        assert len(clocked_emulator.counters.polls_by_task) == 8
        await clock.sleep_until(0.201)  # past the park limit: every task has been polled
        assert len(clocked_emulator.counters.polls_by_task) == 30
        for handle in handles:
            handle.cancel()


async def test_parked_tasks_are_released_when_a_probe_finishes(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """The first finished probe releases the parked tasks long before the park limit."""
    policy = PollPolicy(initial_delay=0.005, factor=1.5, max_interval=0.25, jitter=0.0)
    async with make_clocked_session(poll=policy) as session:
        probes = [await session.submit("gpt-image-2", f"probe {i}") for i in range(8)]
        parked = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(12)]
        )
        for probe in probes:
            await probe
        await clock.sleep_until(0.2)  # the park limit is 4 x 0.25 = 1 s
        polls = clocked_emulator.counters.polls_by_task
        assert all(polls[h.task_id or ""] for h in parked)
        for handle in parked:
            handle.cancel()


async def test_a_deadline_fires_on_time_while_a_poll_hangs(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A poll that never answers is abandoned at the handle's deadline, which says why."""
    policy = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=1.0, jitter=0.0)
    async with make_clocked_session(poll=policy) as session:
        handle = await session.submit("gpt-image-2", "[never] x", timeout=5)
        clocked_emulator.inject("hang", route="poll")
        with pytest.raises(TaskTimeoutError, match="last poll failed: APITimeoutError") as caught:
            await handle
        assert clock.now() == 5.0
        assert session.stats.pending == 0
    assert isinstance(caught.value.__cause__, APITimeoutError)
    assert "got no answer within 4s and was abandoned" in str(caught.value)
    assert [t for t, route, _ in clocked_emulator.requests if route == "poll"] == [1.0]


async def test_a_later_poll_with_an_earlier_deadline_is_still_abandoned_on_time(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """One watchdog serves every poll in flight, and wakes early for a poll that ends first."""
    policy = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=1.0, jitter=0.0, adaptive=False)
    async with make_clocked_session(poll=policy) as session:
        clocked_emulator.inject("hang", route="poll")
        clocked_emulator.inject("hang", route="poll")
        patient = await session.submit("gpt-image-2", "[never] a", timeout=60)
        await clock.sleep_until(0.5)
        hurried = await session.submit("gpt-image-2", "[never] b", timeout=1.25)
        # The first poll (at 1.0) is looked at next at 2.0; the second (at 1.5) must end
        # at its task's deadline, 1.75, sooner.
        with pytest.raises(TaskTimeoutError, match=r"got no answer within 0\.25s"):
            await hurried
        assert clock.now() == 1.75
        patient.cancel()
    polls = [t for t, route, _ in clocked_emulator.requests if route == "poll"]
    assert polls[:2] == [1.0, 1.5]


async def test_a_stuck_poll_is_abandoned_at_the_poll_timeout_and_retried(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A hung poll ends at its request deadline as a transient failure; the next succeeds."""
    policy = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=1.0, jitter=0.0)
    timeouts = Timeouts(request=5.0)
    async with make_clocked_session(poll=policy, timeouts=timeouts) as session:
        handle = await session.submit("gpt-image-2", "a kite", timeout=60)
        clocked_emulator.inject("hang", route="poll")
        result = await handle
    polls = [t for t, route, _ in clocked_emulator.requests if route == "poll"]
    assert polls[:2] == [1.0, pytest.approx(1.0 + 5.0 + 1.0)]  # abandoned at 6 s, then 1 s
    assert result.task_id == handle.task_id
    assert session.stats.completed == 1


async def test_a_trickling_poll_is_abandoned_at_the_request_deadline_on_the_system_clock(
    hostile: HostileServer,
) -> None:
    """Polls carry no aiohttp timer of their own: the poller's watchdog, on the real clock,
    abandons a poll whose answer trickles at Timeouts.request, and polls again."""
    policy = PollPolicy(initial_delay=0.01, factor=1.0, max_interval=0.01, jitter=0.0)
    retry = RetryPolicy(base=0.01, jitter=False)
    async with Session(
        "k", hostile.base_url, poll=policy, retry=retry, timeouts=Timeouts(request=0.2)
    ) as session:
        handle = session.track("trickle")
        with anyio.fail_after(30):
            while len(hostile.paths) < 2:  # the first poll was abandoned, a second is out
                await anyio.sleep(0.01)
    with pytest.raises(
        SessionClosedError,
        match=r"last poll failed: APITimeoutError: the poll of task trickle got no answer "
        r"within 0\.2s and was abandoned",
    ):
        await handle


async def test_stuck_polls_never_starve_healthy_tasks(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """With every poll worker stuck, replacements poll the healthy tasks on schedule."""
    policy = PollPolicy(initial_delay=0.1, factor=1.0, max_interval=0.1, jitter=0.0, adaptive=False)
    limits = Limits(max_inflight_polls=4)
    async with make_clocked_session(poll=policy, limits=limits) as session:
        for _ in range(4):
            clocked_emulator.inject("hang", route="poll")
        stuck = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"stuck {i}"} for i in range(4)]
        )
        healthy = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"healthy {i}"} for i in range(20)]
        )
        for handle in healthy:
            await handle
        # Due at 0.1 s, held behind 4 hung polls until they count as stuck (1 s later).
        assert clock.now() <= 0.1 + STUCK_AFTER + 0.1
        assert session._poller.workers == 8  # 4 stuck + 4 replacements, never more
        for handle in stuck:
            await handle  # abandoned at the poll timeout (70 s), then polled again
        assert session._poller.workers == 4
    assert session.stats.completed == 24


async def test_closing_says_why_the_last_poll_failed(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A handle ended by close carries its last poll failure as cause and in the message."""
    async with make_clocked_session() as session:
        handle = await session.submit("gpt-image-2", "[never] x")
        clocked_emulator.inject("502_html", route="poll")
        while not session.stats.polls:
            await clock.sleep_until(clock.now() + 0.001)
    with pytest.raises(
        SessionClosedError, match="last poll failed: ServerError: HTTP 502"
    ) as caught:
        await handle
    assert isinstance(caught.value.__cause__, ServerError)


async def test_a_successful_poll_clears_the_last_failure(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """Once a poll succeeds again, a later timeout does not blame an old failure."""
    async with make_clocked_session() as session:
        handle = await session.submit("gpt-image-2", "[never] x", timeout=1.0)
        clocked_emulator.inject("503", route="poll")
        with pytest.raises(TaskTimeoutError) as caught:
            await handle
    assert clocked_emulator.counters.faults["503"] == 1
    assert caught.value.__cause__ is None
    assert "last poll failed" not in str(caught.value)


async def test_errors_no_retry_can_fix_end_the_handle_at_once(
    clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A 401 while polling ends the handle at its first poll, not at its deadline."""
    async with Session("wrong-key", clocked_emulator.base_url, poll=FAST_POLL, clock=clock) as s:
        handle = s.track("imgtask_x", timeout=900)
        with pytest.raises(AuthenticationError):
            await handle
    assert clock.now() == FAST_POLL.initial_delay


async def test_cancelling_a_handle_abandons_its_poll_in_flight(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """The worker of a cancelled handle's hung poll is free at once for the next task."""
    policy = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=1.0, jitter=0.0, adaptive=False)
    async with make_clocked_session(poll=policy, limits=Limits(max_inflight_polls=1)) as session:
        clocked_emulator.inject("hang", route="poll")
        hung = await session.submit("gpt-image-2", "[never] hung")  # polled at 1.0, hangs
        await clock.sleep_until(0.5)
        other = await session.submit("gpt-image-2", "[never] other")  # due at 1.5
        await clock.sleep_until(1.2)
        hung.cancel()
        await clock.sleep_until(1.6)
        assert other.task_id is not None
        polls = [t for t, route, path in clocked_emulator.requests if route == "poll"]
        assert polls == [1.0, 1.5]  # not 2.0, when a stuck poll would let a new worker in
        assert session._poller.workers == 1
        other.cancel()


async def test_a_poll_slower_than_stuck_after_still_ends_at_its_deadline_on_the_system_clock(
    hostile: HostileServer,
) -> None:
    """A trickling poll outlives `STUCK_AFTER`, so the watchdog adds a worker from its own
    task (a timer callback cannot start one), and later abandons the poll: the wait ends."""
    retry = RetryPolicy(base=0.01, jitter=False)
    async with Session(
        "k", hostile.base_url, poll=FAST_POLL, retry=retry, timeouts=Timeouts(request=1.5)
    ) as session:
        handle = session.track("trickle", timeout=2.5)
        with anyio.fail_after(30), pytest.raises(TaskTimeoutError, match="APITimeoutError"):
            await handle
        assert session._poller.failure is None


async def test_more_trickling_polls_than_workers_never_starve_healthy_tasks_on_the_system_clock(
    hostile: HostileServer,
) -> None:
    """With three times `max_inflight_polls` polls trickling, the longest-stuck are abandoned
    early, so healthy tasks resolve long before any poll reaches `Timeouts.request`."""
    retry = RetryPolicy(base=0.01, jitter=False)
    async with Session(
        "k",
        hostile.base_url,
        poll=FAST_POLL,
        retry=retry,
        timeouts=Timeouts(request=60.0),
        limits=Limits(max_inflight_polls=2),
    ) as session:
        stuck = [session.track(f"trickle-{i}", timeout=120) for i in range(6)]
        await anyio.sleep(0.05)  # the trickling polls take every worker first
        healthy = [session.track(f"ok-{i}") for i in range(3)]  # completed at once
        with anyio.fail_after(30):  # half the request timeout: only early abandoning ends it
            results = [await handle for handle in healthy]
        assert [result.task_id for result in results] == ["ok-0", "ok-1", "ok-2"]
        assert session._poller.workers <= 2 * 2 + 1
        for handle in stuck:
            handle.cancel()


async def test_at_most_max_inflight_polls_stay_stuck_the_longest_stuck_goes_first(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """One poll worker: a second stuck poll abandons the first at once (as a transient
    failure, polled again), instead of both holding their workers to the request deadline."""
    policy = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=1.0, jitter=0.0, adaptive=False)
    async with make_clocked_session(
        poll=policy, limits=Limits(max_inflight_polls=1), timeouts=Timeouts(request=100.0)
    ) as session:
        clocked_emulator.inject("hang", route="poll", count=2)
        first = await session.submit("gpt-image-2", "[never] first", timeout=60)
        second = await session.submit("gpt-image-2", "[never] second", timeout=60)
        await clock.sleep_until(10.0)
        first.cancel()
        second.cancel()
    polls = [
        (t, path.rsplit("/", 1)[-1])
        for t, route, path in clocked_emulator.requests
        if route == "poll"
    ]
    first_id, second_id = first.task_id, second.task_id
    # 1.0: the first poll hangs; 2.0: it is stuck, a replacement polls the second, which
    # hangs; 3.0: the second is stuck too, so the first is abandoned and polled again.
    assert polls[:2] == [(1.0, first_id), (2.0, second_id)]
    assert polls[2][1] == first_id
    assert 3.0 <= polls[2][0] < 5.0


async def test_an_internal_error_in_the_poller_ends_every_handle_and_the_session_says_so(
    make_clocked_session: SessionFactory,
    clocked_emulator: Emulator,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the poller's machinery (here its watchdog) ends every pending handle at once
    with `PollerFailedError` naming the cause; later submits refuse before any create."""

    def broken_watch(self: object) -> None:
        raise ZeroDivisionError("a bug in the watchdog")

    monkeypatch.setattr(PollWorkers, "_watch", broken_watch)
    async with make_clocked_session() as session:
        clocked_emulator.inject("hang", route="poll")
        handles = await session.submit_many(
            [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(3)]
        )
        for handle in handles:
            with pytest.raises(PollerFailedError, match="ZeroDivisionError: a bug in the watchdog"):
                await handle
            assert isinstance(handle.exception(), SessionClosedError)
        creates = clocked_emulator.counters.create_requests
        with pytest.raises(RuntimeError, match="poller stopped on an internal error"):
            await session.submit("gpt-image-2", "one more")
        assert clocked_emulator.counters.create_requests == creates
        assert session.stats.pending == 0
