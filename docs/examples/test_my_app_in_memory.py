"""Testing your code without sockets: the emulator's API served in memory.

``Session(transport=MemoryTransport())`` answers every API call in memory: no server to
start, no ports, and (checked here) no socket opened at all.
"""

import socket

import pytest

import worldrouter_async as wr
from worldrouter_async.testing import FAST_POLL, MemoryTransport


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket or resolve a name fails the test (async: the event
    loop's own wake-up socket is made before it)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


async def make_thumbnail(session: wr.Session, prompt: str) -> str:
    """The code under test: your application's use of the SDK."""
    result = await session.generate("gpt-image-2", prompt, size="1024x1024")
    return result.urls[0]


@pytest.mark.anyio
@pytest.mark.usefixtures("no_network")
async def test_make_thumbnail_in_memory() -> None:
    transport = MemoryTransport()
    async with wr.Session("test-key", transport=transport, poll=FAST_POLL) as session:
        url = await make_thumbnail(session, "a star")
        with pytest.raises(wr.TaskFailedError):  # the [fail] marker fails the task
            await make_thumbnail(session, "[fail] a star")
    assert url.endswith(".png")
    assert transport.api is not None
    assert transport.api.counters.creates == 2
    assert transport.api.counters.connections == 0


@pytest.mark.anyio
@pytest.mark.usefixtures("no_network")
async def test_a_handler_of_your_own() -> None:
    def answer(request: wr.WireRequest) -> wr.WireResponse:
        return wr.WireResponse(401, {}, b'{"error": {"message": "bad key"}}')

    async with wr.Session("wrong", transport=MemoryTransport(answer)) as session:
        with pytest.raises(wr.AuthenticationError, match="bad key"):
            await make_thumbnail(session, "a star")
