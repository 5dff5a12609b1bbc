"""`MemoryTransport`: a session's requests answered in memory, for fast tests of your app.

As httpx's ``MockTransport``: pass it as ``Session(transport=MemoryTransport())`` and no
socket is opened for API calls. By default it serves the bundled emulator's API behaviour
(`EmulatedAPI.handle`); give it a function to answer each request yourself instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Final

from .._errors import APIConnectionError
from .._transports.base import WireRequest, WireResponse
from ._emulator import EmulatedAPI, EmulatedRequest, NoAnswer

Handler = Callable[[WireRequest], WireResponse | Awaitable[WireResponse]]
"""A function (plain or ``async``) that answers one request, for `MemoryTransport`."""

#: Where the emulated images are said to be stored: a name that never resolves, since
#: nothing is served in memory but the API.
MEMORY_STORAGE_URL: Final = "https://storage.emulator.invalid"


class MemoryTransport:
    """An `AsyncTransport` that answers in memory: no sockets, no ports, no network.

    ``MemoryTransport()`` serves a fresh `EmulatedAPI` (auth, validation, task progress,
    failures, rate limits, injected faults), kept in `api` for its counters and controls;
    pass your own ``api=EmulatedAPI(clock=clock)`` to share a `FakeClock` with the
    session. Or pass ``handler``, a function answering each `WireRequest` with a
    `WireResponse`. Images are not served: their URLs name ``storage.emulator.invalid``.

    Example:
        >>> async def test_my_app():  # doctest: +SKIP
        ...     transport = MemoryTransport()
        ...     async with Session("test-key", transport=transport, poll=FAST_POLL) as session:
        ...         assert (await session.generate("gpt-image-2", "a cat")).urls
        ...     assert transport.api.counters.creates == 1
    """

    def __init__(self, handler: Handler | None = None, *, api: EmulatedAPI | None = None) -> None:
        if handler is not None and api is not None:
            raise TypeError("pass MemoryTransport(handler) or MemoryTransport(api=...), not both")
        if handler is None and api is None:
            api = EmulatedAPI()
        if api is not None and not api.storage_url:
            api.storage_url = MEMORY_STORAGE_URL
        #: The emulated API answering (None when a `handler` does).
        self.api: Final = api
        self._handler = handler
        #: Requests sent so far.
        self.sent = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryTransport sent={self.sent}>"

    async def send(self, request: WireRequest) -> WireResponse:
        """The handler's (or the emulated API's) answer, its body dropped past `max_body`."""
        if self._closed:
            raise RuntimeError("the MemoryTransport is closed; a session closes its transport")
        self.sent += 1
        if self.api is not None:
            answer = await _emulated(self.api, request)
        else:
            assert self._handler is not None
            handled = self._handler(request)
            answer = await handled if inspect.isawaitable(handled) else handled
        if answer.body is not None and len(answer.body) > request.max_body:
            return WireResponse(answer.status, answer.headers, None, answer.reason)
        return answer

    async def aclose(self) -> None:
        """Refuse further requests and wake any the emulated API holds (a ``hang`` fault)."""
        self._closed = True
        if self.api is not None:
            await self.api.release()


async def _emulated(api: EmulatedAPI, request: WireRequest) -> WireResponse:
    """`request` as the emulated API answers it; its closing the connection is a dropped
    connection, as the aiohttp transport reports one."""
    url = request.url
    emulated = EmulatedRequest(
        request.method, url.path, dict(request.headers), request.body or b"", dict(url.query)
    )
    try:
        answer = await api.handle(emulated)
    except NoAnswer:
        raise APIConnectionError(
            f"{request.method} {url} failed: the emulated server closed the connection "
            "without answering"
        ) from None
    return WireResponse(answer.status, dict(answer.headers), answer.body)
