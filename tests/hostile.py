"""A hostile HTTP server for the network tests: it answers like a broken or malicious API.

The poll route's behaviour is chosen by the task id (``trickle...``, ``done...`` (a healthy
completed task), ``endless``, ``bomb``, ``html``, ``html502``), the storage routes by their
path; every request path is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import zlib
from ssl import SSLContext
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from worldrouter_async.testing._png import solid_png

BOMB_INFLATED: Final = 256 * 1024 * 1024
"""How large the gzip bomb inflates (it is about 250 KiB on the wire)."""

JPEG_BYTES: Final = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
"""The start and end markers of a JPEG file: what the signature check looks at."""


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of `BOMB_INFLATED` zero bytes, built once per test run."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(BOMB_INFLATED >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


class HostileServer:
    """Serves broken API answers and dangerous storage redirects on one loopback origin.

    A task id ``with-NAME-NAME...`` completes with one image item per name (see `_item`), and
    a create answers a queued task whose id is the prompt, so a batch test picks what its
    tasks answer: ``with-b64-empty`` completes with an inline PNG and the URL of the
    ``/img/empty`` storage route (see `_storage_mode` for the storage names).
    """

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
        app.router.add_post("/v1/images/generation_tasks", self._create)
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
        if kind.startswith("with-"):
            data = [self._item(name) for name in kind.removeprefix("with-").split("-")]
            return web.json_response({"id": kind, "status": "completed", "data": data})
        return web.json_response(
            {"error": {"message": f"no such route {request.path}"}}, status=404
        )

    def _item(self, name: str) -> dict[str, str]:
        """An image item: ``b64`` an inline PNG, ``b64junk`` inline text, else a storage URL."""
        if name == "b64":
            return {"b64_json": base64.b64encode(solid_png((4, 5, 6))).decode()}
        if name == "b64junk":
            return {"b64_json": base64.b64encode(b"<html>not an image</html>").decode()}
        return {"url": f"{self.origin}/img/{name}?sig=SECRET"}

    async def _create(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        body = await request.json()
        return web.json_response({"id": body["prompt"], "status": "queued"})

    async def _stream(
        self,
        request: web.Request,
        chunk: bytes,
        *,
        delay: float,
        content_type: str = "application/json",
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
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
        return await self._storage_mode(request, name)

    async def _storage_mode(self, request: web.Request, name: str) -> web.StreamResponse:
        """Storage by name: ``empty``, ``fakepng``, ``jpeg``, ``octet``, ``trickle``,
        ``stall``, ``unavailable``; anything else is a PNG."""
        if name == "empty":  # 200 image/png with a 0-byte body
            return web.Response(body=b"", content_type="image/png")
        if name == "fakepng":  # an error page that calls itself a PNG
            return web.Response(body=b"<html>Access denied</html>", content_type="image/png")
        if name == "jpeg":  # JPEG bytes labelled as a PNG
            return web.Response(body=JPEG_BYTES, content_type="image/png")
        if name == "octet":  # a PNG with S3's generic type for unlabelled uploads
            return web.Response(body=solid_png((7, 8, 9)), content_type="binary/octet-stream")
        if name == "trickle":  # one byte every 50 ms, for ever: never a read timeout
            return await self._stream(request, b"\x89", delay=0.05, content_type="image/png")
        if name == "stall":  # the first bytes, then silence until the server stops
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            await response.write(b"\x89PNG")
            await self._stopping.wait()
            return response
        if name == "unavailable":
            return web.Response(status=503, text="try again later")
        return web.Response(body=solid_png((1, 2, 3)), content_type="image/png")
