"""A hostile HTTP server for the network tests: it answers like a broken or malicious API.

The poll route's behaviour is chosen by the task id (``trickle...``, ``endless``, ``bomb``,
``html``, ``html502``; the answer modes of `ANSWERS`, such as ``ok...``, come first), the
storage routes by their path; every request path is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import zlib
from collections import Counter
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, Self

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


#: The leading words of the task ids `HostileServer._answer` answers (the ids of the tests
#: about answers that must not be believed); any other id goes to the poll route.
ANSWERS: Final = frozenset(
    {"ok", "nodata", "noitems", "blankitem", "b64", "noid", "mismatch", "mismatchonce"}
    | {"late", "cancelled", "expired"}
)


def _word(task_id: str) -> str:
    """The leading lowercase word of a task id (``late`` for ``late-1``)."""
    found = re.match(r"[a-z0-9]*", task_id)
    return found.group() if found else ""


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
        #: Polls answered per task id (decoded), and creates answered (their paths are in
        #: `paths`, not `raw_paths`, which holds polls only).
        self.polls: Counter[str] = Counter()
        self.creates = 0

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._answers])
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
        """A create answering the id in the body's ``answer_id`` (no id when it is null), or
        else the prompt itself, so a test picks the poll behaviour by the prompt."""
        self.paths.append(request.path)
        self.creates += 1
        body = await request.json()
        answer = body.get("answer_id", body.get("prompt"))
        task: dict[str, Any] = {"status": "queued", "model": body.get("model")}
        if answer is not None:
            task["id"] = answer
        return web.json_response(task, headers={"x-request-id": f"req-create-{self.creates}"})

    @web.middleware
    async def _answers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count every poll by task id, and answer those whose id starts with one of
        `ANSWERS` by `_answer`; the rest go to their route."""
        task_id = request.match_info.get("task_id")
        if request.method != "GET" or task_id is None:
            return await handler(request)  # type: ignore[no-any-return]
        self.polls[task_id] += 1
        if _word(task_id) not in ANSWERS:
            return await handler(request)  # type: ignore[no-any-return]
        self.paths.append(request.path)
        self.raw_paths.append(request.raw_path)
        return self._answer(request, task_id)

    def _answer(self, request: web.Request, task_id: str) -> web.Response:
        """Answers by the id's leading word, as broken gateways and backends give them.

        ``ok``: completed with one image URL; ``nodata``/``noitems``/``blankitem``:
        completed without ``data``, with ``data: []``, or with ``[{"url": ""}]``; ``b64``:
        completed with an inline image; ``noid``: completed, without ``id``/``task_id``;
        ``mismatch``: completed, about another task, every time; ``mismatchonce``: so on
        the first poll only; ``late``: 404 on the first two polls, then ``ok``;
        ``cancelled``/``expired``: that status, undocumented. Each answer has an
        ``x-request-id`` naming the id and the poll's number.
        """
        count = self.polls[task_id]
        headers = {"x-request-id": f"req-{task_id}-{count}"}
        word = _word(task_id)
        if word == "late" and count <= 2:
            word = "gone"
        if word == "mismatchonce" and count == 1:
            word = "mismatch"
        done: dict[str, Any] = {
            "id": task_id,
            "task_id": task_id,
            "status": "completed",
            "data": [{"url": f"{self.origin}/img/mine"}],
            "usage": {"input_tokens": 3, "output_tokens": 100, "total_tokens": 103},
        }
        if word in ("ok", "late", "mismatchonce"):
            return web.json_response(done, headers=headers)
        if word in ("nodata", "noitems", "blankitem"):
            done.pop("data")
            if word != "nodata":
                done["data"] = [] if word == "noitems" else [{"url": ""}]
            return web.json_response(done, headers=headers)
        if word == "b64":
            done["data"] = [{"b64_json": base64.b64encode(solid_png((4, 5, 6))).decode()}]
            return web.json_response(done, headers=headers)
        if word == "noid":
            del done["id"], done["task_id"]
            return web.json_response(done, headers=headers)
        if word == "mismatch":
            done["id"] = done["task_id"] = "imgtask_someone_else"
            done["data"] = [{"url": f"{self.origin}/img/theirs"}]
            return web.json_response(done, headers=headers)
        if word in ("cancelled", "expired"):
            return web.json_response(
                {"id": task_id, "task_id": task_id, "status": word}, headers=headers
            )
        return web.json_response(
            {"error": {"message": f"no task {task_id}"}}, status=404, headers=headers
        )

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
