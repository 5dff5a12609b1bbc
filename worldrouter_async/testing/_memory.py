"""`MemoryTransport`: a session's requests answered in memory, for fast tests of your app.

As httpx's ``MockTransport``: pass it as ``Session(transport=MemoryTransport())`` and no
socket is opened for API calls. By default it serves the bundled emulator's API behaviour
(`Emulator.handle`); give it a function to answer each request yourself instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

from .._transports.base import WireRequest, WireResponse
from ._emulator import Emulator

Handler = Callable[[WireRequest], WireResponse | Awaitable[WireResponse]]
"""A function (plain or ``async``) that answers one request, for `MemoryTransport`."""

#: Where the emulated images are said to be stored: a name that never resolves, since
#: nothing is served in memory but the API.
MEMORY_STORAGE_URL: Final = "https://storage.emulator.invalid"


class MemoryTransport:
    """An `AsyncTransport` that answers in memory: no sockets, no ports, no network.

    ``MemoryTransport()`` serves a fresh `Emulator`'s API (auth, validation, task progress,
    failures, rate limits), kept in `emulator` for its counters and knobs; pass your own
    ``emulator=Emulator(clock=clock)`` to share a `FakeClock` with the session. Or pass
    ``handler``, a function answering each `WireRequest` with a `WireResponse`. Images are
    not served: their URLs name ``storage.emulator.invalid``.

    Example:
        >>> async def test_my_app():  # doctest: +SKIP
        ...     transport = MemoryTransport()
        ...     async with Session("test-key", transport=transport, poll=FAST_POLL) as session:
        ...         assert (await session.generate("gpt-image-2", "a cat")).urls
        ...     assert transport.emulator.counters.creates == 1
    """

    def __init__(self, handler: Handler | None = None, *, emulator: Emulator | None = None) -> None:
        if handler is not None and emulator is not None:
            raise TypeError(
                "pass MemoryTransport(handler) or MemoryTransport(emulator=...), not both"
            )
        self.emulator: Final = None if handler is not None else emulator or Emulator()
        if self.emulator is not None and not self.emulator.storage_url:
            self.emulator.storage_url = MEMORY_STORAGE_URL
        self._handler = handler
        #: Requests sent so far.
        self.sent = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryTransport sent={self.sent}>"

    async def send(self, request: WireRequest) -> WireResponse:
        """The handler's (or the emulator's) answer, its body dropped past `max_body`."""
        if self._closed:
            raise RuntimeError("the MemoryTransport is closed; a session closes its transport")
        self.sent += 1
        if self.emulator is not None:
            status, headers, body = await self.emulator.handle(
                request.method, request.url.raw_path, request.headers, request.body or b""
            )
            answer = WireResponse(status, headers, body)
        else:
            assert self._handler is not None
            handled = self._handler(request)
            answer = await handled if inspect.isawaitable(handled) else handled
        # Headers are read case-insensitively, as on the wire.
        too_long = answer.body is not None and len(answer.body) > request.max_body
        return WireResponse(
            answer.status,
            CIMultiDictProxy(CIMultiDict(answer.headers)),
            None if too_long else answer.body,
            answer.reason,
        )

    async def aclose(self) -> None:
        """Refuse further requests; the session calls it when it closes."""
        self._closed = True
