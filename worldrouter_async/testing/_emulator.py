"""A faithful aiohttp.web emulator of WorldRouter's async image-task API, with fault injection.

It serves the two documented routes with their JSON shapes, runs each task through
queued -> in_progress -> completed/failed on a scaled clock, and serves the finished images
from a separate storage origin that records whether it ever saw an Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import socket
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Mapping
from datetime import UTC, datetime
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import unquote

from aiohttp import web
from attrs import define, field

from .._clock import SYSTEM_CLOCK, Clock
from .._support import GEMINI_MODELS, SUPPORTED_MODELS
from ._png import preview_png

Route = Literal["create", "poll", "any", "storage"]
OutageKind = Literal["refuse", "502", "503", "504"]
FaultKind = Literal[
    "413",
    "429",
    "500",
    "502_html",
    "503",
    "empty_200",
    "bad_json",
    "drop",
    "hang",
    "drop_after_create",
    "500_after_create",
    "hang_after_create",
]

#: Median seconds of real generation per model (queue, run); scaled by ``time_scale``.
MODEL_TIMINGS: Final[dict[str, tuple[float, float]]] = {
    "gpt-image-2": (1.0, 25.0),
    "gemini-2.5-flash-image": (0.5, 8.0),
    "gemini-3-pro-image-preview": (1.0, 20.0),
    "gemini-3.1-flash-image-preview": (0.5, 10.0),
}
_DEFAULT_TIMING: Final = (1.0, 15.0)
_MARKER_RE: Final = re.compile(r"\[(fail|never)(?::([a-z_]+))?\]")
_SIZE_RE: Final = re.compile(r"^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$")
_OUTPUT_FORMATS: Final = frozenset({"png", "jpeg", "jpg", "webp"})
_TASKS_PATH: Final = "/v1/images/generation_tasks"
#: The longest side of an emulator image: the requested size scaled down to fit, so a
#: contact sheet shows the aspect ratio asked for while benchmarks stay fast.
MAX_IMAGE_SIDE: Final = 256


@define
class Fault:
    """One injected fault: the next matching request gets `kind` instead of a normal answer."""

    kind: FaultKind
    route: Route = "any"
    retry_after: float | None = None


@define
class EmulatorCounters:
    """What the emulator has seen, readable from tests and benchmarks."""

    creates: int = 0
    create_requests: int = 0
    idempotent_replays: int = 0
    #: Creates that made a second (paid) task for an Idempotency-Key already used, which
    #: only an emulator started with ``ignore_idempotency=True`` does.
    duplicate_creates: int = 0
    polls: int = 0
    polls_by_task: Counter[str] = field(factory=Counter)
    faults: Counter[str] = field(factory=Counter)
    storage_requests: int = 0
    storage_auth_headers: int = 0
    rate_limited: int = 0  # requests answered 429 (counted in neither creates nor polls)
    connections: int = 0  # API connections that carried at least one request
    outages: int = 0  # outages begun (see `Emulator.outage`)
    outage_answers: int = 0  # requests answered 502/503/504 by an outage, never handled
    #: Accepted API requests per whole second of the monotonic clock (for rate benchmarks).
    per_second: Counter[int] = field(factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """Counters as plain JSON-ready values."""
        return {
            "creates": self.creates,
            "create_requests": self.create_requests,
            "idempotent_replays": self.idempotent_replays,
            "duplicate_creates": self.duplicate_creates,
            "polls": self.polls,
            "faults": dict(self.faults),
            "storage_requests": self.storage_requests,
            "storage_auth_headers": self.storage_auth_headers,
            "rate_limited": self.rate_limited,
            "connections": self.connections,
            "outages": self.outages,
            "outage_answers": self.outage_answers,
            "per_second": dict(self.per_second),
        }


@define
class EmulatedTask:
    """One task's server-side record; its status is a function of the clock."""

    id: str
    model: str
    prompt: str
    n: int
    params: dict[str, Any]
    created: float
    started_at: float
    finishes_at: float
    outcome: Literal["completed", "failed", "never"]
    error_code: str = "generation_failed"
    forced_status: str | None = None

    def status(self, now: float) -> str:
        """The status at monotonic time `now`."""
        if self.forced_status is not None:
            return self.forced_status
        if now < self.started_at:
            return "queued"
        if self.outcome == "never" or now < self.finishes_at:
            return "in_progress"
        return self.outcome


class _TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.capacity = burst
        self.tokens = burst
        self.clock = clock
        self.updated = clock.now()

    def take(self) -> float:
        """Take a token; 0.0 if granted, else the seconds until one is available."""
        now = self.clock.now()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _error(status: int, message: str, code: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": code, "param": None}},
        status=status,
        headers={"x-request-id": _request_id()},
    )


def _image_size(task: EmulatedTask) -> tuple[int, int]:
    """The task's requested ``WIDTHxHEIGHT`` scaled to fit `MAX_IMAGE_SIDE` (square if none)."""
    size = task.params.get("size")
    if not isinstance(size, str) or not _SIZE_RE.match(size):
        return MAX_IMAGE_SIDE, MAX_IMAGE_SIDE
    width, height = (int(side) for side in size.split("x"))
    scale = min(1.0, MAX_IMAGE_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:12]}"


class Emulator:
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
        self.api_key = api_key
        self.time_scale = time_scale
        self.n_cap = n_cap
        self.models = models
        self.fail_rate = fail_rate
        self.drop_rate = drop_rate
        self.slow_rate = slow_rate
        self.slow_delay = slow_delay
        self.ignore_idempotency = ignore_idempotency
        self.keepalive_timeout = keepalive_timeout
        self.counters = EmulatorCounters()
        #: (monotonic time, route, path) of every API request, when `record_requests`.
        self.requests: list[tuple[float, Route, str]] = []
        #: The Idempotency-Key header of every create request, when `record_requests`.
        self.idempotency_keys: list[str | None] = []
        self._record = record_requests
        self.tasks: dict[str, EmulatedTask] = {}
        self.clock = clock
        self._bucket = _TokenBucket(rate_limit, burst, clock) if rate_limit else None
        self._random = random.Random(seed)
        self._idempotency: dict[str, str] = {}
        self._url_generation = 0  # image URLs of an older generation have expired
        self._faults: deque[Fault] = deque()
        self._host = host
        self._ports = (port, storage_port)
        self._ssl = ssl
        self._runners: list[web.AppRunner] = []
        self._api_site: web.SockSite | None = None
        self._api_socket: socket.socket | None = None
        self._api_port = 0
        self._outage: OutageKind | None = None
        #: Requests seen per API connection; the keep-alive timer compares it to see reuse.
        self._served: weakref.WeakKeyDictionary[asyncio.BaseTransport, int] = (
            weakref.WeakKeyDictionary()
        )
        self._planned_outage: tuple[OutageKind, float, int] | None = None
        self._outage_end: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sleepers: set[asyncio.Event] = set()
        self._tls_connections: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self.base_url = ""
        self.storage_url = ""

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
        tls = [self._track_tls_middleware] if self._ssl is not None else []
        api = web.Application(
            middlewares=[*tls, self._request_id_middleware, self._faults_middleware]
        )
        api.on_response_prepare.append(self._start_keepalive_timer)
        api.router.add_post(_TASKS_PATH, self._create)
        api.router.add_get(_TASKS_PATH + "/{task_id}", self._retrieve)
        api.router.add_get("/_emulator/stats", self._stats)
        storage = web.Application(middlewares=tls)
        storage.router.add_get("/images/{task_id}/{name}", self._image)
        self._api_site, self._api_socket = await self._serve(api, self._ports[0])
        storage_port = int((await self._serve(storage, self._ports[1]))[1].getsockname()[1])
        self._api_port = int(self._api_socket.getsockname()[1])
        scheme = "http" if self._ssl is None else "https"
        self.base_url = f"{scheme}://{self._host}:{self._api_port}/v1"
        self.storage_url = f"{scheme}://{self._host}:{storage_port}"

    async def _serve(self, app: web.Application, port: int) -> tuple[web.SockSite, socket.socket]:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self._runners.append(runner)
        return await self._listen(runner, port)

    async def _listen(self, runner: web.AppRunner, port: int) -> tuple[web.SockSite, socket.socket]:
        # Our own listening socket, so an outage can stop accepting before it closes it.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, port), family=family)
        site = web.SockSite(runner, listener, ssl_context=self._ssl)
        await site.start()
        return site, listener

    async def stop(self) -> None:
        """Stop both servers, releasing any request held by a ``hang`` fault."""
        self._stopping.set()
        for woken in self._sleepers:
            woken.set()
        if self._outage_end is not None:
            await self._outage_end
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        # A TLS connection still waiting for its peer's close_notify (a busy proxy between
        # client and server can take seconds) would leave its socket to the garbage collector.
        for transport in list(self._tls_connections):
            transport.abort()
        self._tls_connections.clear()
        await asyncio.sleep(0)  # aborted sockets close on the next loop iteration

    def inject(
        self,
        kind: FaultKind,
        *,
        route: Route = "any",
        count: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `count` requests on `route` with fault `kind`, in order."""
        for _ in range(count):
            self._faults.append(Fault(kind, route, retry_after))

    async def outage(
        self, kind: OutageKind = "refuse", *, seconds: float, after_creates: int = 0
    ) -> None:
        """Take the API down for `seconds`, once `after_creates` more creates have arrived.

        ``"refuse"`` closes the listening socket and aborts every open connection (requests
        in flight are lost, as when a server dies); ``"502"``, ``"503"`` and ``"504"``
        answer every API request as a gateway whose backend is down (nothing is created).
        The storage origin stays up.
        """
        self._planned_outage = (kind, seconds, self.counters.create_requests + after_creates)
        if after_creates <= 0:
            await self._begin_outage()

    async def _begin_outage(self) -> None:
        if self._planned_outage is None:
            return
        kind, seconds, _ = self._planned_outage
        self._planned_outage = None
        self._outage = kind
        self.counters.outages += 1
        server = self._runners[0].server
        listener = self._api_socket
        if kind == "refuse" and self._api_site is not None and listener and server is not None:
            # Stop accepting and let connections already accepted attach first: asyncio
            # would leak the socket of one still being set up when its server closes.
            asyncio.get_running_loop().remove_reader(listener.fileno())
            for _ in range(5):
                await asyncio.sleep(0)
            await self._api_site.stop()
            for handler in server.connections:
                if handler.transport is not None:
                    handler.transport.abort()
        self._outage_end = asyncio.get_running_loop().create_task(self._end_outage(seconds))

    async def _end_outage(self, seconds: float) -> None:
        await self._sleep(seconds)
        if self._outage == "refuse" and not self._stopping.is_set():
            self._api_site, self._api_socket = await self._listen(self._runners[0], self._api_port)
        self._outage = None

    def force_status(self, task_id: str, status: str | None) -> None:
        """Report `status` for the task from now on (None returns it to its timeline)."""
        self.tasks[task_id].forced_status = status

    def expire(self, task_id: str) -> None:
        """Forget a task, so polls answer 404 as for an expired task."""
        self.tasks.pop(task_id, None)

    def expire_urls(self) -> None:
        """Make every image URL given out so far answer 403, as signed URLs do once expired.

        Polls of a completed task give out fresh URLs from then on.
        """
        self._url_generation += 1

    def completed_at(self, task_id: str) -> float:
        """The monotonic time the task finished on the server (inf if it never does)."""
        task = self.tasks[task_id]
        return math.inf if task.outcome == "never" else task.finishes_at

    # --- API routes -------------------------------------------------------------------------

    async def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one API request in memory, as the server would over a socket.

        `path` is the request's raw path (``/v1/images/generation_tasks[/ID]``); returns the
        status, headers and body. Auth, validation, idempotency, task progress on `clock`,
        `rate_limit` and the records (`counters`, `requests`) work as over a socket;
        injected faults and outages act on connections and need the server (`start`).
        This is what `worldrouter_async.testing.MemoryTransport` serves.
        """
        route: Route = "create" if method == "POST" else "poll"
        self._record_request(route, unquote(path), headers)
        if self._bucket is not None and (wait := self._bucket.take()) > 0:
            response = self._rate_limited(wait)
        else:
            self.counters.per_second[int(self.clock.now())] += 1
            response = self._route(method, path, headers, body)
        response.headers.setdefault("x-request-id", _request_id())
        assert isinstance(response.body, bytes)
        return response.status, dict(response.headers), response.body

    def _route(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> web.Response:
        """The API route `handle` serves for `method` and the raw `path`, as the server's."""
        if path == _TASKS_PATH:
            if method == "POST":
                return self._create_answer(headers, body)
        elif path.startswith(_TASKS_PATH + "/") and "/" not in path[len(_TASKS_PATH) + 1 :]:
            if method == "GET":
                return self._retrieve_answer(headers, unquote(path[len(_TASKS_PATH) + 1 :]))
        else:
            return web.Response(status=404, text="404: Not Found")
        return web.Response(status=405, text="405: Method Not Allowed")

    async def _create(self, request: web.Request) -> web.StreamResponse:
        return self._create_answer(request.headers, await request.read())

    def _create_answer(self, headers: Mapping[str, str], raw: bytes) -> web.Response:
        self.counters.create_requests += 1
        if (denied := self._check_auth(headers)) is not None:
            return denied
        key = headers.get("Idempotency-Key")
        known = self._idempotency.get(key) if key else None
        if known is not None and not self.ignore_idempotency and known in self.tasks:
            self.counters.idempotent_replays += 1
            task = self.tasks[known]
            return web.json_response(self._task_json(task, status="queued"))
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "request body must be JSON", "invalid_json", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(
                400, "request body must be an object", "invalid_json", "invalid_request_error"
            )
        problem = self._validate(body)
        if problem is not None:
            return _error(400, problem[1], problem[0], "invalid_request_error")
        task = self._new_task(body)
        if known is not None:
            self.counters.duplicate_creates += 1
        if key:
            self._idempotency[key] = task.id
        return web.json_response(self._task_json(task, status="queued"))

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        return self._retrieve_answer(request.headers, request.match_info["task_id"])

    def _retrieve_answer(self, headers: Mapping[str, str], task_id: str) -> web.Response:
        if (denied := self._check_auth(headers)) is not None:
            return denied
        self.counters.polls += 1
        self.counters.polls_by_task[task_id] += 1
        task = self.tasks.get(task_id)
        if task is None:
            return _error(
                404, f"No task found with id '{task_id}'", "task_not_found", "invalid_request_error"
            )
        return web.json_response(self._task_json(task, status=task.status(self.clock.now())))

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                **self.counters.as_dict(),
                "completed_at": {
                    t.id: t.finishes_at for t in self.tasks.values() if t.outcome != "never"
                },
            }
        )

    async def _image(self, request: web.Request) -> web.StreamResponse:
        self.counters.storage_requests += 1
        if "Authorization" in request.headers:
            self.counters.storage_auth_headers += 1
        if (fault := self._take_fault("storage")) is not None:
            return await self._apply_fault(request, fault)
        if request.query.get("v", "0") != str(self._url_generation):
            return web.Response(status=403, text="Request has expired")
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            raise web.HTTPNotFound()
        # The picture depends on the request, not the task ID: the same prompt looks the
        # same in every run, and distinct prompts (or images of one task) look different.
        index = request.match_info["name"].partition(".")[0]
        width, height = _image_size(task)
        body = preview_png(f"{task.model}\n{task.prompt}\n{index}", width, height)
        return web.Response(body=body, content_type="image/png")

    # --- behaviour ---------------------------------------------------------------------------

    def _check_auth(self, headers: Mapping[str, str]) -> web.Response | None:
        if headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", "invalid_api_key", "authentication_error")

    def _validate(self, body: dict[str, Any]) -> tuple[str, str] | None:
        for name in ("model", "prompt"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                return "missing_required_parameter", f"'{name}' is required"
        if body["model"] not in self.models:
            return "model_not_found", f"The model '{body['model']}' is not an async image model"
        if body.get("response_format", "url") != "url":
            return "invalid_value", "response_format must be 'url' for async image tasks"
        if "output_format" in body and body["output_format"] not in _OUTPUT_FORMATS:
            return "invalid_value", f"Invalid output_format '{body['output_format']}'"
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            return "invalid_value", f"n must be a positive integer, got {n!r}"
        size = body.get("size")
        if (
            body["model"] not in GEMINI_MODELS
            and size is not None
            and size != "auto"
            and not (isinstance(size, str) and _SIZE_RE.match(size))
        ):
            return "invalid_value", f"Invalid size '{size}'"
        return None

    def _new_task(self, body: dict[str, Any]) -> EmulatedTask:
        model, prompt = body["model"], body["prompt"]
        gemini = model in GEMINI_MODELS
        params = {k: v for k, v in body.items() if k not in ("model", "prompt")}
        if gemini:  # Gemini decides the count and the size itself
            params.pop("size", None)
        n = 1 if gemini else min(int(body.get("n", 1)), self.n_cap)
        queue_s, run_s = MODEL_TIMINGS.get(model, _DEFAULT_TIMING)
        now = self.clock.now()
        started = now + self._random.uniform(0.5, 1.5) * queue_s * self.time_scale
        finishes = started + self._random.lognormvariate(math.log(run_s), 0.3) * self.time_scale
        marker = _MARKER_RE.search(prompt)
        outcome: Literal["completed", "failed", "never"] = "completed"
        code = "generation_failed"
        if marker:
            outcome = "failed" if marker.group(1) == "fail" else "never"
            code = marker.group(2) or code
        task = EmulatedTask(
            id=f"imgtask_{uuid.uuid4().hex}",
            model=model,
            prompt=prompt,
            n=n,
            params=params,
            created=time.time(),
            started_at=started,
            finishes_at=finishes,
            outcome=outcome,
            error_code=code,
        )
        self.tasks[task.id] = task
        self.counters.creates += 1
        return task

    def _task_json(self, task: EmulatedTask, *, status: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": task.id,
            "object": "image.generation_task",
            "created": int(task.created),
            "task_id": task.id,
            "status": status,
            "model": task.model,
            "created_at": datetime.fromtimestamp(task.created, UTC).isoformat(),
        }
        if status == "completed":
            signed = f"?v={self._url_generation}" if self._url_generation else ""
            body["data"] = [
                {"url": f"{self.storage_url}/images/{task.id}/{i}.png{signed}"}
                for i in range(task.n)
            ]
            words = len(task.prompt.split())
            body["usage"] = {
                "input_tokens": words,
                "output_tokens": 100 * task.n,
                "total_tokens": words + 100 * task.n,
            }
        elif status == "failed":
            body["error"] = {
                "code": task.error_code,
                "message": f"The image could not be generated ({task.error_code}).",
            }
        return body

    # --- faults ------------------------------------------------------------------------------

    def _take_fault(self, route: Route) -> Fault | None:
        for fault in self._faults:
            if fault.route in (route, "any") and (route != "storage" or fault.route == "storage"):
                self._faults.remove(fault)
                return fault
        return None

    def _random_fault(self) -> Fault | None:
        roll = self._random.random()
        if roll < self.fail_rate:
            return Fault(self._random.choice(("500", "502_html", "503")))
        if roll < self.fail_rate + self.drop_rate:
            return Fault("drop")
        return None

    @web.middleware
    async def _request_id_middleware(
        self, request: web.Request, handler: Any
    ) -> web.StreamResponse:
        """Tag every API answer, success or error, with an ``x-request-id``."""
        response: web.StreamResponse = await handler(request)
        response.headers.setdefault("x-request-id", _request_id())
        return response

    @web.middleware
    async def _track_tls_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Remember each TLS connection, so `stop` can close one a slow peer holds open."""
        if request.transport is not None:
            self._tls_connections.add(request.transport)
        return await handler(request)  # type: ignore[no-any-return]

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_emulator/"):
            return await handler(request)  # type: ignore[no-any-return]
        route: Route = "create" if request.method == "POST" else "poll"
        transport = request.transport
        if transport is not None:
            served = self._served.get(transport, 0)
            if not served:
                self.counters.connections += 1
            self._served[transport] = served + 1
        planned = self._planned_outage
        if (
            planned is not None
            and route == "create"
            and self.counters.create_requests >= planned[2]
        ):
            await self._begin_outage()
        if self._outage is not None:
            return self._gateway_error(request)
        self._record_request(route, request.path, request.headers)
        if self._bucket is not None and (wait := self._bucket.take()) > 0:
            return self._rate_limited(wait)
        self.counters.per_second[int(self.clock.now())] += 1
        fault = self._take_fault(route) or self._random_fault()
        if fault is not None and not fault.kind.endswith("_after_create"):
            return await self._apply_fault(request, fault)
        if self.slow_rate and self._random.random() < self.slow_rate:
            await self._sleep(self.slow_delay)
        response: web.StreamResponse = await handler(request)
        if fault is not None:  # the task was created; now lose or garble the answer
            return await self._apply_fault(request, fault)
        return response

    def _record_request(self, route: Route, path: str, headers: Mapping[str, str]) -> None:
        if self._record:
            self.requests.append((self.clock.now(), route, path))
            if route == "create":
                self.idempotency_keys.append(headers.get("Idempotency-Key"))

    async def _start_keepalive_timer(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        """Like nginx: close the connection if no new request comes soon after this answer."""
        transport = request.transport
        if self.keepalive_timeout is not None and transport is not None:
            asyncio.get_running_loop().call_later(
                self.keepalive_timeout, self._close_if_idle, transport, self._served.get(transport)
            )

    def _close_if_idle(self, transport: asyncio.BaseTransport, served: int | None) -> None:
        if self._served.get(transport) == served:
            transport.close()

    def _gateway_error(self, request: web.Request) -> web.StreamResponse:
        if self._outage == "refuse":  # the request that began it: lost with the server
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPException()
        self.counters.outage_answers += 1
        status = int(self._outage or 502)
        return web.Response(
            status=status,
            text=f"<html><body><h1>{status} from the gateway</h1></body></html>",
            content_type="text/html",
        )

    def _rate_limited(self, wait: float) -> web.Response:
        self.counters.faults["429"] += 1
        self.counters.rate_limited += 1
        response = _error(429, "Rate limit reached for requests", "rate_limit_exceeded", "requests")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        response.headers["retry-after-ms"] = f"{wait * 1000:.0f}"
        return response

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        kind = fault.kind
        if kind == "429":
            return self._rate_limited(fault.retry_after if fault.retry_after is not None else 1.0)
        self.counters.faults[kind] += 1
        if kind in ("500", "500_after_create", "503"):
            status = 503 if kind == "503" else 500
            return _error(
                status,
                "The server had an error processing your request.",
                "server_error",
                "server_error",
            )
        if kind == "413":  # what a proxy in front of the API says to an oversized body
            return _error(
                413, "Request body too large", "payload_too_large", "invalid_request_error"
            )
        if kind == "502_html":
            return web.Response(
                status=502,
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        if kind == "empty_200":
            return web.Response(status=200, body=b"", content_type="application/json")
        if kind == "bad_json":
            return web.Response(
                status=200, text='{"id": "imgtask_', content_type="application/json"
            )
        if kind in ("hang", "hang_after_create"):
            await self._sleep(math.inf)
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise web.HTTPException()  # the connection is gone; nothing is written

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the emulator's clock, but wake at once when the emulator stops."""
        if self._stopping.is_set():
            return
        woken = asyncio.Event()
        self._sleepers.add(woken)
        timer = self.clock.call_later(seconds, woken.set) if math.isfinite(seconds) else None
        try:
            await woken.wait()
        finally:
            self._sleepers.discard(woken)
            if timer is not None:
                timer.cancel()
