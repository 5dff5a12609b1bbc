"""The one observer channel: events reach every subscriber in order; the poller reports
each task's life to it, and the counters and the status feed are its subscribers."""

from __future__ import annotations

import logging

import pytest

from worldrouter_async import (
    NoImagesError,
    PollPolicy,
    Session,
    StatusChange,
    TaskFailedError,
    TaskHandle,
    TaskTimeoutError,
)
from worldrouter_async._hooks import (
    Event,
    Hooks,
    TaskEnded,
    TaskResolved,
    TaskStatusChanged,
    TaskTracked,
    TaskUntracked,
)
from worldrouter_async.testing import FakeClock

from .conftest import SessionFactory
from .hostile import HostileServer

pytestmark = pytest.mark.anyio

MODEL = "gpt-image-2"
QUICK_POLL = PollPolicy(initial_delay=0.005, max_interval=0.02, jitter=0.0)


class Recorder:
    """An observer that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


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


async def test_the_poller_reports_a_completed_task_from_tracked_to_untracked(
    make_session: SessionFactory,
) -> None:
    """A real task's life reaches a subscriber as events, the resolution (with its usage)
    before the handle is untracked, and no `TaskEnded` for a result."""
    recorder = Recorder()
    async with make_session() as session:
        session._poller.hooks.subscribe(recorder)
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
    recorder = Recorder()
    async with make_session() as session:
        session._poller.hooks.subscribe(recorder)
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
    recorder = Recorder()
    async with make_clocked_session() as session:
        session._poller.hooks.subscribe(recorder)
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
    recorder = Recorder()
    async with Session("k", hostile.base_url, poll=QUICK_POLL) as session:
        session._poller.hooks.subscribe(recorder)
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
