"""The transport seam: `Session(transport=...)`, `MemoryTransport`, and what crosses the wire."""

from __future__ import annotations

import json
import socket

import pytest

import worldrouter_async as wr
from worldrouter_async._api import APIClient
from worldrouter_async.testing import (
    FAST_POLL,
    FAST_RETRY,
    EmulatedAPI,
    FakeClock,
    MemoryTransport,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a socket or resolving a name fails the test (set up on the running loop)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.usefixtures("no_network")
async def test_a_session_on_a_memory_transport_opens_no_socket() -> None:
    """Creates, polls, failures and retrieves are the emulator's, answered in memory."""
    transport = MemoryTransport()
    async with wr.Session("test-key", transport=transport, poll=FAST_POLL) as session:
        result = await session.generate("gpt-image-2", "a star", n=2)
        with pytest.raises(wr.TaskFailedError) as failed:
            await session.generate("gpt-image-2", "[fail:content_policy] a star")
        task = await session.tasks.retrieve(result.task_id)
    emulator = transport.api
    assert emulator is not None
    assert len(result.urls) == 2
    assert result.urls[0].startswith("https://storage.emulator.invalid/images/")
    assert failed.value.code == "content_policy"
    assert task.status == "completed"
    assert result.request_id is not None
    assert emulator.counters.creates == 2
    assert emulator.counters.polls >= 3
    assert emulator.counters.connections == 0
    assert transport.sent == session.stats.creates + session.stats.polls


@pytest.mark.usefixtures("no_network")
async def test_memory_transport_keeps_the_emulators_auth_and_validation() -> None:
    """A wrong key is a 401 and a bad parameter a 400, as the server answers them."""
    async with wr.Session("wrong", transport=MemoryTransport(), retry=FAST_RETRY) as session:
        with pytest.raises(wr.AuthenticationError, match="Incorrect API key"):
            await session.tasks.create("gpt-image-2", "a star")
    async with wr.Session("test-key", transport=MemoryTransport()) as session:
        with pytest.raises(wr.BadRequestError, match="not an async image model"):
            await session.tasks.create("no-such-model", "a star")
        with pytest.raises(wr.TaskNotFoundError, match="imgtask_missing"):
            await session.tasks.retrieve("imgtask_missing")


@pytest.mark.usefixtures("no_network")
async def test_memory_transport_on_a_fake_clock_runs_virtual_time() -> None:
    """An emulator and a session on one FakeClock: a real-length generation in no time."""
    clock = FakeClock()
    transport = MemoryTransport(api=EmulatedAPI(clock=clock, time_scale=1.0))
    async with wr.Session("test-key", transport=transport, clock=clock) as session:
        result = await session.generate("gpt-image-2", "a star")
    assert result.urls
    assert clock.now() > 10.0  # seconds of virtual time


@pytest.mark.usefixtures("no_network")
async def test_memory_transport_rate_limit_pauses_the_session() -> None:
    """The emulator's rate limit answers 429 in memory; the session pauses and retries."""
    transport = MemoryTransport(api=EmulatedAPI(rate_limit=1000.0, burst=1.0))
    async with wr.Session(
        "test-key", transport=transport, poll=FAST_POLL, retry=FAST_RETRY
    ) as session:
        handles = await session.submit_many(
            [wr.ImageRequest(model="gpt-image-2", prompt=f"star {i}") for i in range(5)]
        )
        for handle in handles:
            await handle
        stats = session.stats
    assert transport.api is not None
    assert transport.api.counters.rate_limited > 0
    assert stats.rate_limit_pauses > 0


@pytest.mark.usefixtures("no_network")
async def test_injected_faults_play_in_memory() -> None:
    """A 500 on a poll is retried; a create whose connection drops after sending may have
    created a task, so it is ambiguous, as over a socket."""
    transport = MemoryTransport()
    api = transport.api
    assert api is not None
    async with wr.Session(
        "test-key", transport=transport, poll=FAST_POLL, retry=FAST_RETRY
    ) as session:
        api.inject("500", route="poll")
        assert (await session.generate("gpt-image-2", "a star")).urls
        api.inject("drop_after_create", route="create")
        with pytest.raises(wr.AmbiguousCreateError, match="closed the connection"):
            await session.tasks.create("gpt-image-2", "a star")
    assert api.counters.faults["500"] == 1
    assert api.counters.creates == 2  # the dropped create made its task


async def test_a_handler_sees_each_request_as_sent() -> None:
    """Creates are marked paid and bounded, polls left to the poller's watchdog; the key
    travels in the Authorization header but never shows in a request's repr."""
    seen: list[wr.WireRequest] = []
    task = {"id": "imgtask_1", "status": "queued"}

    async def answer(request: wr.WireRequest) -> wr.WireResponse:
        seen.append(request)
        done = request.method == "GET" and len(seen) > 2
        body = (
            {**task, "status": "completed", "data": [{"url": "https://x/1.png"}]} if done else task
        )
        return wr.WireResponse(200, {"x-request-id": f"req_{len(seen)}"}, json.dumps(body).encode())

    timeouts = wr.Timeouts(request=7.0)
    async with wr.Session(
        "sk-secret", transport=MemoryTransport(answer), poll=FAST_POLL, timeouts=timeouts
    ) as session:
        result = await session.generate("gpt-image-2", "a star")
    create, *polls = seen
    assert result.urls == ("https://x/1.png",)
    assert result.request_id == "req_3"
    assert (create.method, create.paid, create.timeout) == ("POST", True, 7.0)
    assert json.loads(create.body or b"") == {"model": "gpt-image-2", "prompt": "a star"}
    assert create.headers["Idempotency-Key"]
    assert [(poll.method, poll.paid, poll.timeout) for poll in polls] == [("GET", False, None)] * 2
    assert polls[0] is polls[1]  # made once per task
    assert str(polls[0].url) == f"{session.base_url}/images/generation_tasks/imgtask_1"
    assert all(request.headers["Authorization"] == "Bearer sk-secret" for request in seen)
    assert not [request for request in seen if "sk-secret" in repr(request)]


async def test_a_connection_error_from_a_transport_is_retried_for_polls() -> None:
    """A transport raising APIConnectionError is a transient failure: a retrieve retries."""
    calls = 0

    def answer(request: wr.WireRequest) -> wr.WireResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise wr.APIConnectionError("dropped")
        return wr.WireResponse(200, {}, b'{"id": "imgtask_1", "status": "in_progress"}')

    async with wr.Session("k", transport=MemoryTransport(answer), retry=FAST_RETRY) as session:
        task = await session.tasks.retrieve("imgtask_1")
    assert (task.status, calls) == ("in_progress", 2)


async def test_a_body_over_max_response_bytes_is_refused() -> None:
    """A body past the request's bound is dropped (the emulated one too), and the API layer
    names the limit."""
    big = b'{"id": "imgtask_1", "status": "queued", "pad": "' + b"x" * 4096 + b'"}'
    transport = MemoryTransport(lambda request: wr.WireResponse(200, {}, big))
    limits = wr.Limits(max_response_bytes=1024)
    async with wr.Session("k", transport=transport, limits=limits, retry=FAST_RETRY) as session:
        with pytest.raises(wr.APIResponseError, match="max_response_bytes=1024"):
            await session.tasks.retrieve("imgtask_1")
    emulated = MemoryTransport()
    request = wr.WireRequest("GET", "https://x/v1/images/generation_tasks/a", {}, max_body=10)
    response = await emulated.send(request)
    assert response.status == 401
    assert response.body is None


async def test_the_session_closes_its_transport() -> None:
    """Leaving the session's block closes the transport it was given, as httpx does."""
    transport = MemoryTransport()
    async with wr.Session("test-key", transport=transport):
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await transport.send(wr.WireRequest("GET", "https://x/v1/images/generation_tasks/a", {}))


def test_memory_transport_takes_a_handler_or_an_api_not_both() -> None:
    """Both at once is a TypeError naming the two ways."""
    with pytest.raises(TypeError, match="not both"):
        MemoryTransport(lambda request: wr.WireResponse(200, {}, b""), api=EmulatedAPI())


def test_a_memory_transport_is_an_async_transport() -> None:
    """The public protocol is runtime-checkable, and MemoryTransport satisfies it."""
    assert isinstance(MemoryTransport(), wr.AsyncTransport)


def test_session_transport_is_deprecated_and_names_the_new_keyword() -> None:
    """The old attribute still gives the API client, with a DeprecationWarning."""
    session = wr.Session("k", "http://127.0.0.1:1/v1")
    with pytest.warns(DeprecationWarning, match=r"Session\(transport=\.\.\.\)"):
        client = session.transport
    assert isinstance(client, APIClient)


async def test_a_handlers_headers_are_read_in_any_case() -> None:
    """A plain dict of headers is read case-insensitively, as aiohttp's are."""
    answer = wr.WireResponse(
        200, {"X-Request-ID": "req_A"}, b'{"id": "imgtask_1", "status": "queued"}'
    )
    async with wr.Session("k", transport=MemoryTransport(lambda request: answer)) as session:
        task = await session.tasks.retrieve("imgtask_1")
    assert task.request_id == "req_A"
