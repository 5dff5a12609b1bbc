"""A hostile HTTP server for the network tests: it answers like a broken or malicious API.

The poll route's behaviour is chosen by the task id (``trickle...``, ``done...`` (a healthy
completed task), ``endless``, ``bomb``, ``html``, ``html502``), the storage routes by their
path; every request path is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from ssl import SSLContext
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from worldrouter_async.testing._png import solid_png

BOMB_INFLATED: Final = 256 * 1024 * 1024
"""How large the gzip bomb inflates (it is about 250 KiB on the wire)."""


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of `BOMB_INFLATED` zero bytes, built once per test run."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(BOMB_INFLATED >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


class HostileServer:
    """Serves broken API answers and dangerous storage redirects on one loopback origin."""

    def __init__(self, *, ssl: SSLContext | None = None) -> None:
        self._ssl = ssl
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""
        self.origin = ""
        #: Every path requested, in order (decoded, and as sent).
        self.paths: list[str] = []
        self.raw_paths: list[str] = []
        #: Extra routes tests can add before start: path -> redirect target.
        self.redirects: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/v1/images/generation_tasks/{task_id}", self._poll)
        app.router.add_get("/v1/images/generation_tasks/", self._poll)
        app.router.add_get("/v1/images/", self._poll)
        app.router.add_get("/img/{name}", self._image)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"{'https' if self._ssl else 'http'}://127.0.0.1:{port}"
        self.base_url = self.origin + "/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        self.raw_paths.append(request.raw_path)
        kind = request.match_info.get("task_id", "")
        if kind.startswith("trickle"):
            return await self._stream(request, b"{", delay=0.05)
        if kind.startswith("done"):
            image = f"{self.origin}/img/{kind}"
            return web.json_response({"id": kind, "status": "completed", "data": [{"url": image}]})
        if kind == "endless":
            return await self._stream(request, b" " * 65536, delay=0.0)
        if kind == "bomb":
            return web.Response(
                body=gzip_bomb(),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if kind == "html":
            return web.Response(
                text="<html><body>Sign in to the hotel Wi-Fi</body></html>",
                content_type="text/html",
            )
        if kind == "html502":
            return web.Response(
                status=502, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        return web.json_response(
            {"error": {"message": f"no such route {request.path}"}}, status=404
        )

    async def _stream(
        self, request: web.Request, chunk: bytes, *, delay: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        while not self._stopping.is_set():
            await response.write(chunk)
            await asyncio.sleep(delay)
        return response

    async def _image(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        name = request.match_info["name"]
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        if name == "page":
            return web.Response(text="<html>Access denied</html>", content_type="text/html")
        return web.Response(body=solid_png((1, 2, 3)), content_type="image/png")
