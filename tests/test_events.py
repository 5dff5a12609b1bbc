"""Status events: `StatusChange` values fanned out to `on_status` and `status_changes()`."""

from __future__ import annotations

import gc
import weakref
from collections import Counter
from itertools import pairwise

import pytest

from worldrouter_async import (
    InvalidRequestError,
    LocalStatus,
    Session,
    SessionClosedError,
    StatusChange,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from worldrouter_async.testing import Emulator

from .conftest import SessionFactory

pytestmark = pytest.mark.anyio


async def test_on_status_sees_every_change_in_order(make_session: SessionFactory) -> None:
    """The callback gets one StatusChange per change, chained old to new, ending completed."""
    seen: list[StatusChange] = []
    async with make_session(on_status=seen.append) as session:
        result = await session.generate("gpt-image-2", "x")
    assert [change.task_id for change in seen] == [result.task_id] * len(seen)
    assert seen[0].old == "queued"
    assert seen[-1].new == "completed"
    for before, after in pairwise(seen):
        assert before.new == after.old
        assert before.time <= after.time
    assert [change.final for change in seen] == [False] * (len(seen) - 1) + [True]
    assert not any(change.local for change in seen)


async def test_a_final_change_sees_a_done_handle(make_session: SessionFactory) -> None:
    """When on_status sees completed or failed, the handle's result or error is readable."""
    outcomes: list[tuple[str, object]] = []

    def record(change: StatusChange) -> None:
        if change.final:
            handle = change.handle
            outcomes.append((change.new, handle.exception() or handle.result().urls))

    async with make_session(on_status=record) as session:
        ok = await session.submit("gpt-image-2", "fine")
        bad = await session.submit("gpt-image-2", "[fail] broken")
        result = await ok
        with pytest.raises(TaskFailedError):
            await bad
    assert ("completed", result.urls) in outcomes
    assert [kind for kind, value in outcomes if isinstance(value, TaskFailedError)] == ["failed"]


async def test_a_raising_callback_does_not_kill_the_poller(
    make_session: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors in on_status are logged and polling carries on."""

    def explode(change: StatusChange) -> None:
        raise ZeroDivisionError

    async with make_session(on_status=explode) as session:
        results = [await session.generate("gpt-image-2", f"x{i}") for i in range(3)]
    assert len(results) == 3
    assert "on_status callback raised" in caplog.text


def test_an_async_on_status_is_refused_when_the_session_is_made() -> None:
    """An async def callback (or object with an async __call__) is a TypeError naming the fix."""

    async def on_status(change: StatusChange) -> None:
        """Never awaited by a sync fan-out."""

    class Listener:
        async def __call__(self, change: StatusChange) -> None:
            """Never awaited either."""

    for listener in (on_status, Listener()):
        with pytest.raises(TypeError, match=r"status_changes\(\)"):
            Session("key", "http://127.0.0.1:9/v1", on_status=listener)


async def test_a_sync_callback_returning_a_coroutine_is_closed_and_logged(
    make_session: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A lambda around an async function never leaks an un-awaited coroutine warning."""

    async def forward(change: StatusChange) -> None:
        """Would need awaiting."""

    async with make_session(on_status=lambda change: forward(change)) as session:
        await session.generate("gpt-image-2", "x")
    assert "on_status returned a coroutine" in caplog.text


async def test_streams_see_the_same_changes_as_on_status(make_session: SessionFactory) -> None:
    """Two streams and the callback receive identical StatusChange values, in order."""
    called: list[StatusChange] = []
    async with make_session(on_status=called.append) as session:
        first, second = session.status_changes(), session.status_changes()
        handles = await session.submit_many(
            [{"model": "gemini-2.5-flash-image", "prompt": f"p{i}"} for i in range(5)]
        )
        for handle in handles:
            await handle
    streamed = [change async for change in first]
    assert streamed == called
    assert [change async for change in second] == called
    assert sum(change.final for change in streamed) == 5


async def test_local_endings_appear_as_final_local_changes(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """Timeout, cancel, a 404 and session close each end their handle with one local change."""
    done_when_called: list[bool] = []
    async with make_session(
        on_status=lambda change: done_when_called.append(change.handle.done())
    ) as session:
        changes = session.status_changes()
        timed = await session.submit("gpt-image-2", "[never] slow", timeout=0.05)
        cancelled = await session.submit("gpt-image-2", "[never] stop")
        expired = await session.submit("gpt-image-2", "[never] gone")
        closed = await session.submit("gpt-image-2", "[never] left")
        with pytest.raises(TaskTimeoutError):
            await timed
        cancelled.cancel()
        emulator.expire(expired.task_id or "")
        with pytest.raises(TaskNotFoundError):
            await expired
    with pytest.raises(SessionClosedError):
        await closed
    with pytest.raises(TaskCancelledError):
        await cancelled
    finals = {change.handle: change async for change in changes if change.final}
    assert {handle: change.new for handle, change in finals.items()} == {
        timed: LocalStatus.TIMED_OUT,
        cancelled: LocalStatus.CANCELLED,
        expired: LocalStatus.ERRORED,
        closed: LocalStatus.CLOSED,
    }
    for handle, change in finals.items():
        assert change.local
        assert change.old == handle.status  # the last server status, which stays as it was
    assert done_when_called.count(True) == 4  # each ending was reported after it settled


async def test_every_tracked_handle_ends_with_exactly_one_final_change(
    session: Session,
) -> None:
    """Completed, failed, cancelled and closed handles each produce one final change."""
    changes = session.status_changes()
    handles = await session.submit_many(
        [{"model": "gemini-2.5-flash-image", "prompt": f"ok {i}"} for i in range(10)]
        + [{"model": "gemini-2.5-flash-image", "prompt": f"[fail] {i}"} for i in range(5)]
        + [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(5)]
    )
    for handle in handles[:10]:
        await handle
    for handle in handles[10:15]:
        with pytest.raises(TaskFailedError):
            await handle
    handles[15].cancel()
    await session.aclose()
    finals = Counter([change.handle async for change in changes if change.final])
    assert finals == Counter(handles)
    assert all(handle.done() for handle in handles)


async def test_a_stream_ends_after_the_closed_endings(session: Session) -> None:
    """Closing the session delivers the closed endings, then ends iteration."""
    changes = session.status_changes()
    handle = await session.submit("gpt-image-2", "[never] pending")
    await session.aclose()
    last = [change async for change in changes][-1]
    assert (last.handle, last.new, last.local) == (handle, "closed", True)
    assert [change async for change in session.status_changes()] == []


async def test_a_slow_reader_loses_the_oldest_changes_not_the_poller(session: Session) -> None:
    """A full buffer drops its oldest change and counts it; tasks finish regardless."""
    everything = session.status_changes()
    small = session.status_changes(buffer=3)
    handles = await session.submit_many(
        [{"model": "gemini-2.5-flash-image", "prompt": f"p{i}"} for i in range(8)]
    )
    for handle in handles:
        await handle  # the poller never waited for the reader that is not reading
    await session.aclose()
    full = [change async for change in everything]
    kept = [change async for change in small]
    assert kept == full[-3:]
    assert small.dropped == len(full) - 3
    assert everything.dropped == 0


async def test_closing_a_stream_early_ends_it_and_frees_it(session: Session) -> None:
    """aclose (or leaving async with) ends iteration; an abandoned stream is not kept alive."""
    async with session.status_changes() as changes:
        await session.generate("gemini-2.5-flash-image", "x")
    assert [change async for change in changes] == []
    abandoned = weakref.ref(session.status_changes())
    gc.collect()
    assert abandoned() is None
    await session.generate("gemini-2.5-flash-image", "still fine")


def test_a_stream_buffer_must_hold_at_least_one_change() -> None:
    """buffer=0 is refused with a message naming the value."""
    session = Session("key", "http://127.0.0.1:9/v1")
    with pytest.raises(InvalidRequestError, match="got 0"):
        session.status_changes(buffer=0)
