"""Never run: type-checked by mypy --strict to pin how the public API reads to users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import assert_type

from yarl import URL

import worldrouter_async as wr
from worldrouter_async.batch import (
    INDEX_NAME,
    MANIFEST_NAME,
    BatchItem,
    BatchRunner,
    BatchSummary,
    Gallery,
    JournalError,
    JournalLostError,
    JournalRow,
    LineError,
    Outcome,
    OutputClaimedError,
    PostgresJournal,
    SharedJournalStore,
    build_gallery,
    check_bucket,
    is_bucket,
    iter_jsonl,
    iter_rows,
    mark_repeats,
    read_jsonl,
    read_rows,
)
from worldrouter_async.testing import (
    EmulatedAPI,
    EmulatedRequest,
    EmulatedResponse,
    FakeClock,
    MemoryTransport,
)


class RetryLog:
    """A user's observer: a plain class with ``on_event``, matched on the event types."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def on_event(self, event: wr.Event) -> None:
        match event:
            case wr.RetryScheduled(delay=delay, attempt=attempt, error=error):
                assert_type(attempt, int)
                assert_type(error, wr.APIError)
                self.delays.append(delay)
            case wr.RateLimitPaused(seconds=seconds, error=limited):
                assert_type(limited, wr.RateLimitError)
                self.delays.append(seconds)
            case wr.RequestAnswered(request=request, status=status, request_id=request_id):
                assert_type(request, wr.WireRequest)
                assert_type(status, int)
                assert_type(request_id, str | None)
            case wr.RequestFailed(error=failure):
                assert_type(failure, wr.APIConnectionError)
            case wr.BreakerOpened(failures=failures) | wr.BreakerProbeSent(number=failures):
                assert_type(failures, int)
            case wr.BreakerClosed(outage=outage):
                assert_type(outage, float)
            case wr.TaskCreated(task=task):
                assert_type(task, wr.ImageTask)
            case wr.TaskResolved(handle=handle, succeeded=succeeded, usage=usage):
                assert_type(handle, wr.TaskHandle)
                assert_type(succeeded, bool)
                assert_type(usage, wr.Usage | None)


async def observed() -> None:
    observer: wr.Observer = RetryLog()
    async with wr.Session("key", observers=[observer, RetryLog()]) as session:
        assert_type(session.stats.retries, int)


async def usage() -> None:
    async with wr.Session("key", poll=wr.PollPolicy(max_interval=5.0)) as session:
        task = await session.tasks.create("gpt-image-2", "a star", size="1024x1024")
        assert_type(task, wr.ImageTask)
        handle = await session.submit("gpt-image-2", "a star", timeout=60.0)
        assert_type(handle, wr.TaskHandle)
        read = wr.ImageRequest(model="gpt-image-2", prompt="from a file")
        session.report_ignored(read, source="prompts.jsonl", line=3)
        assert_type(await session.submit_request(read, reported=True), wr.TaskHandle)
        assert_type(handle.task_id, str | None)
        result = await handle
        assert_type(result, wr.ImageResult)
        assert_type(result.urls, tuple[str, ...])
        assert_type(result.request_id, str | None)
        handles = await session.submit_many([wr.ImageRequest(model="m", prompt="p")])
        assert_type(handles, list[wr.TaskHandle])
        async for done in session.as_completed(handles):
            assert_type(done, wr.TaskHandle)
        paths = await session.download(result, Path("out"))
        assert_type(paths, tuple[Path, ...])
        assert_type(result.images, tuple[wr.ImageData, ...])
        images = await session.read(result)
        assert_type(images, tuple[wr.ImageBytes, ...])
        (single,) = await session.read(result.urls[0])
        assert_type(single.data, bytes)
        assert_type(single.content_type, str)
        assert_type(single.url, str | None)
        assert_type(single.extension, str)
        assert_type(session.stats, wr.SessionStats)
        assert_type(session.stats.breaker_opens, int)
        async with BatchRunner(session, "job.sqlite3") as runner:
            async for outcome in runner.run([wr.ImageRequest(model="m", prompt="p")]):
                assert_type(outcome, Outcome)
        assert_type(runner.summary, BatchSummary)
        shared_url = "postgresql://batch@db.internal/images"
        async with BatchRunner(session, shared_url, job="cats", worker_timeout=30.0) as worker:
            assert_type(worker.summary, BatchSummary)
        async with PostgresJournal(shared_url, job="cats") as shared:
            store: SharedJournalStore = shared
            assert_type((await store.claim(["a"])).held, frozenset[str])
            assert_type([w.holds for w in await shared.live_workers()], list[int])
        async with session.status_changes(buffer=64) as changes:
            async for change in changes:
                assert_type(change, wr.StatusChange)
                assert_type(change.new, str)
                assert_type(change.old, str | None)
                assert_type(change.final, bool)
        assert_type(changes.dropped, int)
        requests = ({"model": "m", "prompt": p} for p in ("a", "b"))
        async with session.pipeline(requests, max_pending=8, ordered=True) as finished:
            async for done in finished:
                assert_type(done, wr.TaskHandle)
        assert_type(finished, wr.Pipeline)
        try:
            async with BatchRunner(session, Path("job.sqlite3"), out_dir="images"):
                pass
            async with BatchRunner(session, "job.sqlite3", out_dir="s3://bucket/job-42"):
                pass
        except (JournalLostError, OutputClaimedError) as refused:
            assert_type(refused, JournalLostError | OutputClaimedError)
            journal_error: JournalError = refused
            print(journal_error)
    assert_type(read_jsonl("prompts.jsonl"), tuple[list[BatchItem], list[LineError]])
    assert_type(read_rows(Path("job.sqlite3")), list[JournalRow])
    assert_type(iter_rows("job.sqlite3"), Iterator[JournalRow])
    checked = mark_repeats(iter_jsonl("prompts.jsonl"))
    assert_type(checked, Iterator[BatchItem | LineError])
    gallery = build_gallery("job.sqlite3", Path("images"), live=True)
    assert_type(gallery, Gallery)
    assert_type(gallery.index, Path)
    assert_type(gallery.requests, int)
    assert_type(Path("images") / MANIFEST_NAME, Path)
    assert_type(Path("images") / INDEX_NAME, Path)
    if is_bucket("s3://bucket/images"):
        assert_type(await check_bucket("s3://bucket/images"), None)
    async with wr.Session(
        "key", retry_ambiguous_creates=True, timeouts=wr.Timeouts(create_keepalive=0.5)
    ) as deduplicating:
        assert_type(deduplicating.retry_ambiguous_creates, bool)
    try:
        pass
    except wr.APIStatusError as exc:
        assert_type(exc.status_code, int)
    for record in deduplicating.abandoned:
        assert_type(record, wr.AbandonedTask)
        assert_type(record.task_id, str | None)
        assert_type(record.idempotency_key, str | None)
        assert_type(record.ambiguous, bool)


async def request_stream() -> AsyncIterator[wr.ImageRequest]:
    """An async generator of requests is a pipeline input too."""
    yield wr.ImageRequest(model="m", prompt="p")


async def pipelines(session: wr.Session) -> None:
    async with session.pipeline(request_stream()) as finished:
        assert_type(finished.pending, int)
        assert_type(await anext(finished), wr.TaskHandle)


def answers_not_believed() -> None:
    """What the errors about answers that were not believed carry."""
    try:
        pass
    except wr.NoImagesError as exc:
        assert_type(exc.usage, wr.Usage | None)
        assert_type(exc.task, wr.ImageTask)
    except wr.TaskMismatchError as exc:
        assert_type(exc.answered_id, str)
        assert_type(exc.request_id, str | None)
    except wr.UnpollableTaskIdError as exc:
        assert_type(exc.task, wr.ImageTask)
    assert_type(wr.PollPolicy(not_found_grace=30.0).not_found_grace, float)


def on_status(change: wr.StatusChange) -> None:
    """A plain function is an `on_status` listener."""


async def on_status_async(change: wr.StatusChange) -> None:
    """An async function is not: nothing would await it."""


def listeners() -> None:
    wr.Session(on_status=on_status)
    wr.Session(on_status=print)
    wr.Session(on_status=on_status_async)  # type: ignore[arg-type]


async def transports() -> None:
    """Any object with `send` and `aclose` is a transport; MemoryTransport is one."""
    memory = MemoryTransport()
    async with wr.Session("test-key", transport=memory) as session:
        assert_type(session.stats.polls, int)
    assert_type(memory.api, EmulatedAPI | None)

    def answer(request: wr.WireRequest) -> wr.WireResponse:
        assert_type(request.url, URL)
        assert_type(request.paid, bool)
        return wr.WireResponse(200, {}, b"{}")

    async def answer_later(request: wr.WireRequest) -> wr.WireResponse:
        return answer(request)

    wr.Session(transport=MemoryTransport(answer))
    wr.Session(transport=MemoryTransport(answer_later))
    transport: wr.AsyncTransport = memory
    assert_type(await transport.send(wr.WireRequest("GET", "https://x/", {})), wr.WireResponse)
    wr.Session(transport=object())  # type: ignore[arg-type]


async def emulated_api() -> None:
    api = EmulatedAPI(clock=FakeClock())
    api.inject("drop", route="poll")
    request = EmulatedRequest("GET", "/v1/images/generation_tasks/x", {"Authorization": "k"})
    answer = await api.handle(request)
    assert_type(answer, EmulatedResponse)
    assert_type(answer.status, int)
    assert_type(answer.header("x-request-id"), str | None)
    await api.release()
