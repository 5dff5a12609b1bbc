"""The emulator on loopback: `EmulatedAPI` served by aiohttp on two origins.

This module owns only the wire: the listening sockets (the API's own, so a ``"refuse"``
outage can stop accepting and abort what is open), TLS, the nginx-like keep-alive timeout,
connection counting, and turning `NoAnswer` into a connection closed without an answer.
What each request gets is decided by `EmulatedAPI`.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from types import TracebackType
from typing import Self

from aiohttp import web

from ..._clock import SYSTEM_CLOCK, Clock
from ..._support import SUPPORTED_MODELS
from ._api import EmulatedAPI
from ._messages import EmulatedRequest, EmulatedResponse, NoAnswer

#: One origin's behaviour: `EmulatedAPI.handle` or `EmulatedAPI.handle_storage`.
_Handler = Callable[[EmulatedRequest], Awaitable[EmulatedResponse]]


class Emulator(EmulatedAPI):
    """The WorldRouter async image-task API on loopback, for tests, demos and benchmarks.

    Args:
        api_key: the only Bearer token accepted.
        time_scale: multiplies every simulated duration (0.001 turns a 25 s generation
            into 25 ms).
        seed: seeds task durations and random faults, so runs repeat.
        n_cap: the server's cap on ``n``.
        rate_limit: requests per second allowed (token bucket, `burst` deep); excess gets
            429 with Retry-After.
        fail_rate: probability per API request of a 500, 502 or 503.
        drop_rate: probability per API request of a dropped connection.
        slow_rate: probability per API request of an answer delayed by `slow_delay` seconds.
        ignore_idempotency: play a server that ignores the Idempotency-Key header: a resent
            create makes a second paid task (counted in ``counters.duplicate_creates``).
        keepalive_timeout: seconds the API server keeps a connection open once it has
            answered and no new request came (like nginx ``keepalive_timeout``); None keeps
            connections open for aiohttp's default hour.
        clock: the time task progress, rate limits, slow answers and `requests` are on;
            share a `FakeClock` with the `Session` to run both on virtual time.
        ssl: serve both origins over https with this server context (for example from
            ``trustme``), to test TLS trust and proxies' CONNECT tunnels.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with Emulator() as emu, Session("test-key", emu.base_url) as session:
        ...         print((await session.generate("gpt-image-2", "a cat")).urls)
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        time_scale: float = 0.001,
        seed: int = 0,
        n_cap: int = 4,
        models: frozenset[str] = SUPPORTED_MODELS,
        rate_limit: float | None = None,
        burst: float = 10.0,
        fail_rate: float = 0.0,
        drop_rate: float = 0.0,
        slow_rate: float = 0.0,
        slow_delay: float = 0.5,
        ignore_idempotency: bool = False,
        keepalive_timeout: float | None = None,
        record_requests: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        clock: Clock = SYSTEM_CLOCK,
        ssl: SSLContext | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            time_scale=time_scale,
            seed=seed,
            n_cap=n_cap,
            models=models,
            rate_limit=rate_limit,
            burst=burst,
            fail_rate=fail_rate,
            drop_rate=drop_rate,
            slow_rate=slow_rate,
            slow_delay=slow_delay,
            ignore_idempotency=ignore_idempotency,
            record_requests=record_requests,
            clock=clock,
        )
        self.keepalive_timeout = keepalive_timeout
        self._host = host
        self._ports = (port, storage_port)
        self._ssl = ssl
        self._runners: list[web.BaseRunner] = []
        self._api_site: web.SockSite | None = None
        self._api_socket: socket.socket | None = None
        self._api_port = 0
        #: Requests seen per API connection; the keep-alive timer compares it to see reuse.
        self._served: weakref.WeakKeyDictionary[asyncio.BaseTransport, int] = (
            weakref.WeakKeyDictionary()
        )
        self._tls_connections: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self.base_url = ""

    def __repr__(self) -> str:
        return f"<Emulator {self.base_url or 'stopped'} tasks={len(self.tasks)}>"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serve the API and the storage origin on their ports (0 picks free ones)."""
        self._api_site, self._api_socket = await self._serve(self._serve_api, self._ports[0])
        storage_socket = (await self._serve(self._serve_storage, self._ports[1]))[1]
        self._api_port = int(self._api_socket.getsockname()[1])
        scheme = "http" if self._ssl is None else "https"
        self.base_url = f"{scheme}://{self._host}:{self._api_port}/v1"
        self.storage_url = f"{scheme}://{self._host}:{storage_socket.getsockname()[1]}"

    async def _serve(
        self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], port: int
    ) -> tuple[web.SockSite, socket.socket]:
        # aiohttp's low-level server: the API routes its own requests, so no app or router.
        server = web.Server(handler, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self._runners.append(runner)
        return await self._listen(runner, port)

    async def _listen(
        self, runner: web.BaseRunner, port: int
    ) -> tuple[web.SockSite, socket.socket]:
        # Our own listening socket, so an outage can stop accepting before it closes it.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, port), family=family)
        site = web.SockSite(runner, listener, ssl_context=self._ssl)
        await site.start()
        return site, listener

    async def stop(self) -> None:
        """Stop both servers, releasing any request held by a ``hang`` fault."""
        await self.release()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        # A TLS connection still waiting for its peer's close_notify (a busy proxy between
        # client and server can take seconds) would leave its socket to the garbage collector.
        for transport in list(self._tls_connections):
            transport.abort()
        self._tls_connections.clear()
        await asyncio.sleep(0)  # aborted sockets close on the next loop iteration

    # --- the wire ----------------------------------------------------------------------------

    async def _serve_api(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and not request.path.startswith("/_emulator/"):
            served = self._served.get(transport, 0)
            if not served:
                self.counters.connections += 1
            self._served[transport] = served + 1
        response = await self._answer(request, self.handle)
        if self.keepalive_timeout is not None and transport is not None:
            # Like nginx: close the connection if no new request comes soon after this answer.
            asyncio.get_running_loop().call_later(
                self.keepalive_timeout, self._close_if_idle, transport, self._served.get(transport)
            )
        return response

    async def _serve_storage(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._answer(request, self.handle_storage)

    async def _answer(self, request: web.BaseRequest, handle: _Handler) -> web.StreamResponse:
        """`request` answered by `handle`; `NoAnswer` aborts the connection unanswered."""
        transport = request.transport
        if self._ssl is not None and transport is not None:
            # Remembered, so `stop` can close one whose slow peer holds it open.
            self._tls_connections.add(transport)
        body = await request.content.read() if request.body_exists else b""
        emulated = EmulatedRequest(
            request.method, request.path, request.headers, body, request.query
        )
        try:
            answer = await handle(emulated)
        except NoAnswer:
            if transport is not None:
                transport.abort()
            raise web.HTTPException() from None  # the connection is gone; nothing is written
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    def _close_if_idle(self, transport: asyncio.BaseTransport, served: int | None) -> None:
        if self._served.get(transport) == served:
            transport.close()

    async def _stop_accepting(self) -> None:
        """Stop listening and abort every open API connection (a ``"refuse"`` outage)."""
        server = self._runners[0].server if self._runners else None
        listener, site = self._api_socket, self._api_site
        if site is None or listener is None or server is None:
            return
        # Stop accepting and let connections already accepted attach first: asyncio
        # would leak the socket of one still being set up when its server closes.
        asyncio.get_running_loop().remove_reader(listener.fileno())
        for _ in range(5):
            await asyncio.sleep(0)
        await site.stop()
        for handler in server.connections:
            if handler.transport is not None:
                handler.transport.abort()

    async def _resume_accepting(self) -> None:
        self._api_site, self._api_socket = await self._listen(self._runners[0], self._api_port)
