"""Pipelines: a bounded window of tasks over a stream of requests, with real backpressure."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from worldrouter_async import (
    IgnoredParameterWarning,
    InvalidRequestError,
    LocalStatus,
    Session,
    SessionClosedError,
    TaskAbandonedError,
    TaskFailedError,
    TaskHandle,
)
from worldrouter_async._pipeline import WORKER_NAME
from worldrouter_async.testing import Emulator

pytestmark = pytest.mark.anyio

FAST = "gemini-2.5-flash-image"


def _requests(prompts: list[str], model: str = FAST) -> list[dict[str, Any]]:
    return [{"model": model, "prompt": prompt} for prompt in prompts]


def _endless(prompt: str, model: str = FAST) -> Iterator[dict[str, Any]]:
    for i in itertools.count():
        yield {"model": model, "prompt": f"{prompt} {i}"}


async def _until(condition: Any) -> None:
    """Wait for emulator/pipeline state that has no event to await."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


def _creates_in_flight() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("worldrouter-async create")]


def _workers_left() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == WORKER_NAME]


async def test_every_request_yields_one_done_handle_failures_included(
    session: Session, emulator: Emulator
) -> None:
    """Good, failing and invalid requests each come out once, as done handles."""
    requests = [
        *_requests([f"ok {i}" for i in range(20)]),
        *_requests([f"[fail] {i}" for i in range(3)]),
        {"model": FAST},  # no prompt: fails validation, nothing is sent
    ]
    seen: list[TaskHandle] = []
    async with session.pipeline(requests, max_pending=5) as handles:
        async for handle in handles:
            assert handle.done()
            assert emulator.counters.creates - len(seen) <= 5  # the window never overflows
            seen.append(handle)
    assert len(seen) == 24
    assert emulator.counters.creates == 23
    prompts = sorted(h.request.prompt for h in seen if h.request is not None)
    assert prompts == sorted(r["prompt"] for r in requests[:23])
    errors = [type(h.exception()) for h in seen if h.exception() is not None]
    assert sorted(e.__name__ for e in errors) == ["InvalidRequestError"] + ["TaskFailedError"] * 3


async def test_a_stalled_reader_stops_new_creates(session: Session, emulator: Emulator) -> None:
    """With the reader stalled, creates stop at the window; reading again resumes them."""
    async with session.pipeline(_endless("endless"), max_pending=4) as handles:
        first = await anext(handles)
        assert first.done()
        # One handle taken: one more create, then every slot holds a finished handle.
        await _until(lambda: handles.ready >= 4)
        assert emulator.counters.creates == 5
        # Let the session do a whole task's worth of creating and polling meanwhile.
        await session.generate(FAST, "unrelated")
        assert emulator.counters.creates == 6  # only the unrelated task was created
        assert (handles.pending, handles.ready) == (0, 4)
        for _ in range(3):
            await anext(handles)
        await _until(lambda: emulator.counters.creates == 9)
    assert emulator.counters.creates == 9


async def test_ordered_yields_in_input_order(session: Session) -> None:
    """ordered=True returns handles in input order, slow tasks and failures in place."""
    requests = [
        {"model": "gpt-image-2", "prompt": "slow first"},
        *_requests([f"fast {i}" for i in range(6)]),
        {"model": FAST, "prompt": "[fail] in the middle"},
        *_requests([f"fast again {i}" for i in range(4)]),
    ]
    async with session.pipeline(requests, max_pending=4, ordered=True) as handles:
        out = [handle async for handle in handles]
    assert [h.request.prompt for h in out if h.request] == [r["prompt"] for r in requests]
    assert isinstance(out[7].exception(), TaskFailedError)


async def test_an_async_iterable_fed_by_a_producer(session: Session) -> None:
    """An async generator over a queue is consumed while a producer task fills it."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=2)

    async def produce() -> None:
        for i in range(12):
            await queue.put(f"queued {i}")
        await queue.put(None)

    async def requests() -> AsyncIterator[dict[str, str]]:
        while (prompt := await queue.get()) is not None:
            yield {"model": FAST, "prompt": prompt}

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(produce)
        async with session.pipeline(requests(), max_pending=3) as handles:
            urls = [(await handle).urls async for handle in handles]
    assert len(urls) == 12


async def test_break_cancels_outstanding_work_and_closes_the_input(
    session: Session, emulator: Emulator
) -> None:
    """After break, unfinished tasks are abandoned (untracked, recorded), the input closed."""
    changes = session.status_changes()
    closed = asyncio.Event()

    async def requests() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"model": FAST, "prompt": "quick"}
            for i in itertools.count():
                yield {"model": "gpt-image-2", "prompt": f"[never] {i}"}
        finally:
            closed.set()

    async with session.pipeline(requests(), max_pending=6) as handles:
        async for handle in handles:
            assert handle.result().urls
            await _until(lambda: session.stats.pending == 6)  # all six created and tracked
            break
    assert closed.is_set()
    assert emulator.counters.creates == 7
    assert not _workers_left()
    assert session.stats.pending == 0
    await session.aclose()
    abandoned = [c async for c in changes if c.new == LocalStatus.ABANDONED]
    assert len(abandoned) == 6
    assert all(isinstance(c.handle.exception(), TaskAbandonedError) for c in abandoned)
    first = next(iter(emulator.tasks))  # the quick task, whose handle the reader took
    assert {record.task_id for record in session.abandoned} == set(emulator.tasks) - {first}


async def test_a_cancelled_pipeline_leaves_every_created_task_reachable(
    session: Session, emulator: Emulator
) -> None:
    """Cancelled from outside mid-stream: each task the server made is recorded, none tracked."""
    requests = ({"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in itertools.count())

    async def consume() -> None:
        async with session.pipeline(requests, max_pending=40) as handles:
            async for _ in handles:
                pytest.fail("no task finishes")

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(consume)
        await _until(lambda: emulator.counters.creates >= 20)
        task_group.cancel_scope.cancel()
    await _until(lambda: not _creates_in_flight())  # their answers are recorded as they land
    assert len(session.abandoned) == emulator.counters.creates
    assert sorted(record.task_id or "" for record in session.abandoned) == sorted(emulator.tasks)
    assert session.stats.pending == 0
    assert not _workers_left()


async def test_a_session_closed_mid_pipeline_ends_it_with_one_error_and_nothing_lost(
    session: Session,
) -> None:
    """Every request taken from the input comes out as a handle, then the reason, unwrapped."""
    taken = 0

    def requests() -> Iterator[dict[str, str]]:
        nonlocal taken
        for i in itertools.count():
            taken += 1
            yield {"model": "gpt-image-2", "prompt": f"[never] {i}"}

    async def close_when_full() -> None:
        await _until(lambda: session.stats.pending == 4)
        await session.aclose()

    handles: list[TaskHandle] = []

    async def read_all() -> None:
        async with session.pipeline(requests(), max_pending=4) as pipeline:
            async for handle in pipeline:
                handles.append(handle)  # noqa: PERF401 - one by one, to keep them if it raises

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(close_when_full)
        with pytest.raises(RuntimeError, match="session closed while its pipeline was running"):
            await read_all()
    assert len(handles) == taken > 4
    errors = [type(handle.exception()) for handle in handles]
    assert errors.count(SessionClosedError) == 4
    assert set(errors) == {SessionClosedError, RuntimeError}
    assert not _workers_left()


async def test_cancelling_the_reader_stops_everything(session: Session) -> None:
    """Cancelling the task that reads ends the pipeline cleanly, with nothing left running."""
    with anyio.CancelScope() as scope:
        async with session.pipeline(_endless("[never] x", "gpt-image-2"), max_pending=3) as hs:
            await _until(lambda: hs.pending == 3 and session.stats.pending == 3)
            scope.cancel()
            await anext(hs)
    assert scope.cancelled_caught
    assert not _workers_left()
    assert session.stats.pending == 0


async def test_an_error_in_the_block_propagates_unwrapped(session: Session) -> None:
    """The reader's own exception leaves the block as itself, not in an ExceptionGroup."""

    async def read() -> None:
        async with session.pipeline(_endless("[never] y", "gpt-image-2"), max_pending=2):
            await _until(lambda: session.stats.pending == 2)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await read()
    assert not _workers_left()
    assert session.stats.pending == 0


async def test_an_input_error_is_raised_after_the_handles_before_it(session: Session) -> None:
    """A failing input iterator first yields what it produced, then raises its error."""

    def requests() -> Iterator[dict[str, Any]]:
        yield from _requests(["a", "b", "c"])
        raise ValueError("the input broke")

    async with session.pipeline(requests(), max_pending=8) as handles:
        seen = [await anext(handles) for _ in range(3)]
        with pytest.raises(ValueError, match="the input broke"):
            await anext(handles)
        assert [handle async for handle in handles] == []
    assert sorted(h.request.prompt for h in seen if h.request) == ["a", "b", "c"]


async def test_a_pipeline_is_used_inside_async_with(session: Session) -> None:
    """Iterating without the block, or a window under one, is refused with the fix."""
    pipeline = session.pipeline([])
    with pytest.raises(RuntimeError, match=r"async with session\.pipeline"):
        pipeline.__aiter__()
    with pytest.raises(InvalidRequestError, match="got 0"):
        session.pipeline([], max_pending=0)
    async with pipeline as handles:
        assert [h async for h in handles] == []
    with pytest.raises(RuntimeError, match="pipeline is closed"):
        await anext(pipeline)
    with pytest.raises(RuntimeError, match="entered once"):
        await pipeline.__aenter__()


async def test_ignored_parameters_name_the_request_place_in_the_input(
    session: Session, emulator: Emulator
) -> None:
    """Pipeline workers have no user line to blame, so the warning names the request's index."""
    requests = [*_requests(["plain"]), {"model": FAST, "prompt": "sized", "size": "512x512"}]
    with pytest.warns(IgnoredParameterWarning, match="ignores size") as caught:
        async with session.pipeline(requests, max_pending=2) as handles:
            done = [handle async for handle in handles]
    assert [(w.filename, w.lineno) for w in caught] == [("<pipeline request 1>", 0)]
    assert all(handle.exception() is None for handle in done)
    assert emulator.counters.creates == 2
