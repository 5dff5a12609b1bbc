"""The one observer channel: events reach every subscriber in order; the API layer, the
throttle's pauses, the retries, the outage breaker and the poller report to it; the
counters, the status feed, the log lines and users' observers are its subscribers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

import pytest

from worldrouter_async import (
    APIConnectionError,
    BreakerClosed,
    BreakerOpened,
    BreakerProbeSent,
    DownloadError,
    Event,
    NoImagesError,
    PollPolicy,
    RateLimitError,
    RateLimitPaused,
    RequestAnswered,
    RequestFailed,
    RetryScheduled,
    ServerError,
    Session,
    StatusChange,
    TaskCreated,
    TaskEnded,
    TaskFailedError,
    TaskHandle,
    TaskResolved,
    TaskStatusChanged,
    TaskTimeoutError,
    TaskTracked,
    TaskUntracked,
)
from worldrouter_async._breaker import DEFAULT_THRESHOLD
from worldrouter_async._hooks import Hooks
from worldrouter_async.testing import Emulator, FakeClock

from .conftest import SessionFactory
from .hostile import HostileServer

pytestmark = pytest.mark.anyio

MODEL = "gpt-image-2"
QUICK_POLL = PollPolicy(initial_delay=0.005, max_interval=0.02, jitter=0.0)


E = TypeVar("E")

#: The poller's events: the life of each tracked task.
TASK_LIFE = (TaskTracked, TaskUntracked, TaskStatusChanged, TaskResolved, TaskEnded)


class Recorder:
    """An observer that keeps every event it is given (only those of `kinds`, if named)."""

    def __init__(self, *kinds: type) -> None:
        self.kinds = kinds or (object,)
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        if isinstance(event, self.kinds):
            self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]


class Raising:
    def on_event(self, event: Event) -> None:
        raise ZeroDivisionError("a bug in an observer")


def _kinds(recorder: Recorder) -> list[str]:
    return [type(event).__name__ for event in recorder.events]


def test_every_subscriber_gets_each_event_in_subscription_order() -> None:
    """`emit` calls the observers given at construction, then those subscribed later."""
    calls: list[tuple[str, Event]] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_event(self, event: Event) -> None:
            calls.append((self.name, event))

    hooks = Hooks(Named("first"))
    hooks.subscribe(Named("second"))
    event = TaskTracked(TaskHandle("task-1"))
    hooks.emit(event)
    assert calls == [("first", event), ("second", event)]


def test_an_observer_naming_its_event_kinds_gets_only_those() -> None:
    """``event_kinds`` routes: the session's own subscribers get only what they use, an
    observer without it everything, also one subscribed after events were routed."""

    class Picky(Recorder):
        event_kinds = (TaskTracked,)

    picky, everything = Picky(), Recorder()
    hooks = Hooks(picky)
    tracked, untracked = TaskTracked(TaskHandle("task-1")), TaskUntracked(TaskHandle("task-1"))
    hooks.emit(tracked)
    hooks.emit(untracked)
    hooks.subscribe(everything)
    hooks.emit(tracked)
    hooks.emit(untracked)
    assert picky.events == [tracked, tracked]
    assert everything.events == [tracked, untracked]


def test_a_raising_observer_is_logged_and_the_others_still_get_the_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One broken subscriber never keeps an event from the rest, nor raises into the emitter."""
    recorder = Recorder()
    hooks = Hooks(Raising(), recorder)
    event = TaskUntracked(TaskHandle("task-1"))
    with caplog.at_level(logging.ERROR, logger="worldrouter_async"):
        hooks.emit(event)
    assert recorder.events == [event]
    assert "an observer of TaskUntracked raised" in caplog.text


def test_a_raising_observer_is_logged_once_however_often_it_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken observer on the hot path logs its first error only, and stays subscribed."""
    raising, recorder = Raising(), Recorder()
    hooks = Hooks(raising, recorder)
    with caplog.at_level(logging.ERROR, logger="worldrouter_async"):
        for _ in range(3):
            hooks.emit(TaskTracked(TaskHandle("task-1")))
    assert len(caplog.records) == 1
    assert "ZeroDivisionError" in caplog.text
    assert len(recorder.events) == 3


async def test_the_poller_reports_a_completed_task_from_tracked_to_untracked(
    make_session: SessionFactory,
) -> None:
    """A real task's life reaches a subscriber as events, the resolution (with its usage)
    before the handle is untracked, and no `TaskEnded` for a result."""
    recorder = Recorder(*TASK_LIFE)
    async with make_session(observers=[recorder]) as session:
        handle = await session.submit(MODEL, "a lighthouse")
        result = await handle
    kinds = _kinds(recorder)
    assert kinds[0] == "TaskTracked"
    assert kinds[-3:] == ["TaskResolved", "TaskUntracked", "TaskStatusChanged"]
    assert "TaskEnded" not in kinds
    resolved = recorder.events[-3]
    assert isinstance(resolved, TaskResolved)
    assert resolved.succeeded
    assert resolved.handle is handle
    assert resolved.usage == result.usage
    changed = recorder.events[-1]
    assert isinstance(changed, TaskStatusChanged)
    assert changed.new == "completed"


async def test_a_failed_task_is_resolved_unsuccessfully_then_ended(
    make_session: SessionFactory,
) -> None:
    """A task the server fails is one unsuccessful resolution, then its ending."""
    recorder = Recorder(*TASK_LIFE)
    async with make_session(observers=[recorder]) as session:
        handle = await session.submit(MODEL, "[fail] a lighthouse")
        with pytest.raises(TaskFailedError):
            await handle
        assert session.stats.failed == 1
    resolved = [event for event in recorder.events if isinstance(event, TaskResolved)]
    assert resolved == [TaskResolved(handle, False)]
    assert _kinds(recorder)[-3:] == ["TaskUntracked", "TaskEnded", "TaskStatusChanged"]


async def test_a_deadline_ends_a_task_without_resolving_it(
    make_clocked_session: SessionFactory, clock: FakeClock
) -> None:
    """A timeout is the SDK's decision, not the server's: `TaskEnded`, no `TaskResolved`,
    and the failed counter stays where it was."""
    recorder = Recorder(*TASK_LIFE)
    async with make_clocked_session(observers=[recorder]) as session:
        handle = await session.submit(MODEL, "[never] a lighthouse", timeout=30.0)
        with pytest.raises(TaskTimeoutError):
            await handle
        assert session.stats.failed == 0
    assert not any(isinstance(event, TaskResolved) for event in recorder.events)
    assert recorder.events[-2:] == [TaskUntracked(handle), TaskEnded(handle)]


async def test_a_done_callback_sees_the_task_counted_and_the_change_published(
    make_session: SessionFactory,
) -> None:
    """Subscribers run before the handle settles: a done-callback reading `stats` sees the
    task completed and no longer pending, and `on_status` saw the terminal change after."""
    seen: list[StatusChange] = []
    counted: list[tuple[int, int]] = []
    async with make_session(on_status=seen.append) as session:
        handle = await session.submit(MODEL, "a lighthouse")
        handle.add_done_callback(
            lambda _: counted.append((session.stats.completed, session.stats.pending))
        )
        await handle
    assert counted == [(1, 0)]
    assert seen[-1].new == "completed"


async def test_a_completed_task_without_images_counts_as_failed_with_its_usage(
    hostile: HostileServer,
) -> None:
    """'completed' with no image is an unsuccessful resolution that still carries the
    task's usage, so the session counts its tokens and one failure."""
    recorder = Recorder(*TASK_LIFE)
    async with Session("k", hostile.base_url, poll=QUICK_POLL, observers=[recorder]) as session:
        handle = await session.submit(MODEL, "nodata-1")
        with pytest.raises(NoImagesError):
            await handle
        stats = session.stats
    resolved = [event for event in recorder.events if isinstance(event, TaskResolved)]
    assert len(resolved) == 1
    assert not resolved[0].succeeded
    assert resolved[0].usage is not None
    assert resolved[0].usage.total_tokens == 103
    assert (stats.completed, stats.failed, stats.usage.total_tokens) == (0, 1, 103)
    assert recorder.events[-3:-1] == [TaskUntracked(handle), TaskEnded(handle)]


async def test_a_429_is_one_pause_event_then_a_retry_that_waits_for_it(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A create answered 429 with Retry-After 30 s: its answer, the session-wide pause of
    30 s, a retry that adds no wait of its own, then the create accepted at 30 s."""
    recorder = Recorder(RequestAnswered, RateLimitPaused, RetryScheduled, TaskCreated)
    clocked_emulator.inject("429", route="create", retry_after=30.0)
    async with make_clocked_session(observers=[recorder]) as session:
        task = await session.tasks.create(MODEL, "a star")
        stats = session.stats
    assert clock.now() == 30.0
    assert _kinds(recorder) == [
        "RequestAnswered",
        "RateLimitPaused",
        "RetryScheduled",
        "RequestAnswered",
        "TaskCreated",
    ]
    limited, paused, retry, accepted, created = recorder.events
    assert isinstance(limited, RequestAnswered)
    assert (limited.request.method, limited.status, limited.attempt) == ("POST", 429, 1)
    assert isinstance(paused, RateLimitPaused)
    assert paused.seconds == 30.0
    assert isinstance(paused.error, RateLimitError)
    assert paused.error.retry_after == 30.0
    assert retry == RetryScheduled(paused.error, 0.0, 2)
    assert isinstance(accepted, RequestAnswered)
    assert (accepted.status, accepted.attempt) == (200, 2)
    assert accepted.request_id is not None
    assert created == TaskCreated(task)
    assert (stats.rate_limit_pauses, stats.retries, stats.creates) == (1, 1, 1)


async def test_a_429_pause_and_its_retry_are_reported_in_real_time(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """The same over a real socket and the real clock: the pause and retry events come,
    and the create goes through."""
    recorder = Recorder(RateLimitPaused, RetryScheduled, TaskCreated)
    emulator.inject("429", route="create", retry_after=0.05)
    async with make_session(observers=[recorder]) as session:
        await session.tasks.create(MODEL, "a star")
    assert _kinds(recorder) == ["RateLimitPaused", "RetryScheduled", "TaskCreated"]


async def test_a_retried_retrieve_is_reported_with_its_error_and_its_wait(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A 503 then a 200: one retry event naming the 503 and attempt 2, and the clock moved
    by exactly the delay it announced."""
    recorder = Recorder(RequestAnswered, RetryScheduled)
    async with make_clocked_session(observers=[recorder]) as session:
        task = await session.tasks.create(MODEL, "a star")
        clocked_emulator.inject("503", route="poll")
        started = clock.now()
        await session.tasks.retrieve(task.id)
        assert session.stats.retries == 1
    (retry,) = recorder.of(RetryScheduled)
    assert isinstance(retry, RetryScheduled)
    assert isinstance(retry.error, ServerError)
    assert retry.error.status == 503
    assert retry.attempt == 2
    assert retry.delay > 0
    assert clock.now() - started == pytest.approx(retry.delay)
    answers = [(e.request.method, e.status) for e in recorder.of(RequestAnswered)]
    assert answers == [("POST", 200), ("GET", 503), ("GET", 200)]


async def test_a_refused_connection_is_a_failed_request_event(
    free_tcp_port: int,
) -> None:
    """No answer at all: a `RequestFailed` carrying the connection error, and no answer
    event; the polls counter counts the attempt."""
    recorder = Recorder(RequestAnswered, RequestFailed)
    async with Session(
        "k", f"http://127.0.0.1:{free_tcp_port}/v1", observers=[recorder]
    ) as session:
        with pytest.raises(APIConnectionError):
            await session.tasks.retrieve("imgtask_1")
        stats = session.stats
    assert recorder.events
    assert all(isinstance(event, RequestFailed) for event in recorder.events)
    first = recorder.events[0]
    assert isinstance(first, RequestFailed)
    assert isinstance(first.error, APIConnectionError)
    assert first.request.url.path == "/v1/images/generation_tasks/imgtask_1"
    failed = recorder.of(RequestFailed)
    assert [event.attempt for event in failed] == list(range(1, len(failed) + 1))
    assert stats.polls == len(recorder.events)


async def test_an_outage_is_reported_as_the_breaker_opening_probing_and_closing(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator
) -> None:
    """A 503 outage on virtual time: the breaker opens after the threshold, probes with
    GETs marked as probes, and closes with the outage's length; counters agree."""
    recorder = Recorder(BreakerOpened, BreakerProbeSent, BreakerClosed, RequestAnswered)
    async with make_clocked_session(observers=[recorder]) as session:
        handles = [await session.submit(MODEL, f"p{i}") for i in range(20)]
        await clocked_emulator.outage("503", seconds=0.2)
        for handle in handles:
            await handle
    stats = session.stats  # once closed: polls left in flight by the outage have ended
    breaker = [e for e in recorder.events if not isinstance(e, RequestAnswered)]
    assert breaker[0] == BreakerOpened(DEFAULT_THRESHOLD)
    assert isinstance(breaker[-1], BreakerClosed)
    assert breaker[-1].outage > 0
    probes = breaker[1:-1]
    assert probes == [BreakerProbeSent(n) for n in range(1, len(probes) + 1)]
    assert (stats.breaker_opens, stats.breaker_probes) == (1, len(probes))
    probe_answers = [e for e in recorder.of(RequestAnswered) if e.probe]
    assert len(probe_answers) == len(probes)
    polls = [e for e in recorder.of(RequestAnswered) if not e.probe and e.request.method == "GET"]
    assert stats.polls == len(polls)


async def test_a_retried_download_is_reported_but_not_counted_as_an_api_retry(
    make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """A storage 503 is retried: one retry event with its `DownloadError`; `stats.retries`
    counts API requests only, as it always has."""
    recorder = Recorder(RetryScheduled)
    async with make_session(observers=[recorder]) as session:
        result = await session.generate(MODEL, "a star")
        emulator.inject("503", route="storage")
        await session.download(result, tmp_path)
        assert session.stats.retries == 0
    (retry,) = recorder.events
    assert isinstance(retry, RetryScheduled)
    assert isinstance(retry.error, DownloadError)
    assert retry.attempt == 2


async def test_an_observer_that_raises_never_breaks_the_session(
    make_session: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's observer raising on every event: tasks still complete, the counters and
    later observers still see everything, and one ERROR line says so."""
    recorder = Recorder(TaskCreated)
    with caplog.at_level(logging.ERROR, logger="worldrouter_async"):
        async with make_session(observers=[Raising(), recorder]) as session:
            results = [await session.generate(MODEL, f"a star {i}") for i in range(3)]
            stats = session.stats
    assert len(results) == 3
    assert (stats.creates, stats.completed) == (3, 3)
    assert len(recorder.events) == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "an observer of" in errors[0].getMessage()


@pytest.mark.parametrize("observer", [print, Recorder().on_event], ids=["function", "method"])
def test_what_cannot_observe_is_refused_when_the_session_is_made(observer: object) -> None:
    """An object without ``on_event`` is a TypeError naming it, before anything is sent."""
    with pytest.raises(TypeError, match="has no on_event"):
        Session("k", observers=[observer])  # type: ignore[list-item]


def test_an_async_on_event_is_refused_when_the_session_is_made() -> None:
    """Nothing would await an ``async def on_event``: refused, saying to use a plain method."""

    class AsyncObserver:
        async def on_event(self, event: Event) -> None:
            pass

    with pytest.raises(TypeError, match="on_event is async"):
        Session("k", observers=[AsyncObserver()])  # type: ignore[list-item]
