"""The emulated WorldRouter API as plain methods: a request in, an answer out, no sockets.

`EmulatedAPI.handle` plays the API origin (create, poll, the ``/_emulator/stats`` page) and
`EmulatedAPI.handle_storage` the storage origin that serves finished images. Both take an
`EmulatedRequest` and return an `EmulatedResponse`, or raise `NoAnswer` where the server
would close the connection. They own everything but the wire: authentication, validation,
idempotency, task timing on the clock, the rate limit, faults, gateway outages (played by
`Outages`, `_outages.py`) and URL expiry. `Emulator` serves them over aiohttp; an
in-memory transport can call them directly:

    api = EmulatedAPI(clock=FakeClock())
    answer = await api.handle(EmulatedRequest("POST", CREATE_PATH, headers, body))
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from typing import Final

from ..._clock import SYSTEM_CLOCK, Clock
from ..._support import SUPPORTED_MODELS
from .._png import preview_png
from ._counters import EmulatorCounters
from ._faults import (
    Fault,
    FaultKind,
    FaultQueue,
    OutageKind,
    Route,
    TokenBucket,
    Waits,
    fault_answer,
    rate_limited_answer,
)
from ._messages import (
    NOT_FOUND,
    EmulatedRequest,
    EmulatedResponse,
    NoAnswer,
    error_answer,
    json_answer,
    method_not_allowed,
    request_id,
    text_answer,
)
from ._outages import Outages
from ._tasks import EmulatedTask, image_size, new_task, task_body, validate_create

#: The create endpoint's path; a poll is this path, a slash and the task ID.
CREATE_PATH: Final = "/v1/images/generation_tasks"
#: The counters as JSON, for benchmarks that run the emulator in another process.
STATS_PATH: Final = "/_emulator/stats"
#: The largest body aiohttp's server reads by default (its ``client_max_size``).
MAX_BODY: Final = 1024**2
_POLL_PATH: Final = re.compile(r"/v1/images/generation_tasks/([^{}/]+)")
_IMAGE_PATH: Final = re.compile(r"/images/([^{}/]+)/([^{}/]+)")
_READS: Final = ("GET", "HEAD")

Endpoint = Callable[[EmulatedRequest], EmulatedResponse]


class EmulatedAPI:
    """WorldRouter's async image-task API and its storage origin, without a server.

    Args:
        api_key: the only Bearer token accepted.
        time_scale: multiplies every simulated duration.
        seed: seeds task durations and random faults, so runs repeat.
        n_cap: the server's cap on ``n``.
        models: the models a create may name.
        rate_limit: requests per second allowed (token bucket, `burst` deep).
        fail_rate: probability per API request of a 500, 502 or 503.
        drop_rate: probability per API request of `NoAnswer`.
        slow_rate: probability per API request of an answer delayed by `slow_delay`.
        ignore_idempotency: make a second paid task for a resent Idempotency-Key.
        record_requests: keep `requests` and `idempotency_keys`.
        clock: the time tasks, rate limits, slow answers and `requests` are on.

    Example:
        >>> async def test_create():  # doctest: +SKIP
        ...     api = EmulatedAPI()
        ...     body = b'{"model": "gpt-image-2", "prompt": "a cat"}'
        ...     headers = {"Authorization": "Bearer test-key"}
        ...     request = EmulatedRequest("POST", "/v1/images/generation_tasks", headers, body)
        ...     assert (await api.handle(request)).json()["status"] == "queued"
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
        record_requests: bool = True,
        clock: Clock = SYSTEM_CLOCK,
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
        self.counters = EmulatorCounters()
        #: (monotonic time, route, path) of every API request, when `record_requests`.
        self.requests: list[tuple[float, Route, str]] = []
        #: The Idempotency-Key header of every create request, when `record_requests`.
        self.idempotency_keys: list[str | None] = []
        self.tasks: dict[str, EmulatedTask] = {}
        self.clock = clock
        #: The storage origin written into image URLs (set by whoever serves it).
        self.storage_url = ""
        self._record = record_requests
        self._bucket = TokenBucket(rate_limit, burst, clock) if rate_limit else None
        self._random = random.Random(seed)
        self._idempotency: dict[str, str] = {}
        self._url_generation = 0  # image URLs of an older generation have expired
        self._faults = FaultQueue()
        self._waits = Waits(clock)
        self._outages = Outages(
            counters=self.counters,
            waits=self._waits,
            stop_accepting=self._stop_accepting,
            resume_accepting=self._resume_accepting,
        )

    def __repr__(self) -> str:
        return f"<EmulatedAPI tasks={len(self.tasks)}>"

    # --- controls for tests ------------------------------------------------------------------

    def inject(
        self,
        kind: FaultKind,
        *,
        route: Route = "any",
        count: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `count` requests on `route` with fault `kind`, in order."""
        self._faults.inject(Fault(kind, route, retry_after), count)

    async def outage(
        self, kind: OutageKind = "refuse", *, seconds: float, after_creates: int = 0
    ) -> None:
        """Take the API down for `seconds`, once `after_creates` more creates have arrived.

        ``"refuse"`` closes the listening socket and aborts every open connection (requests
        in flight are lost, as when a server dies); ``"502"``, ``"503"`` and ``"504"``
        answer every API request as a gateway whose backend is down (nothing is created).
        The storage origin stays up.
        """
        at_creates = self.counters.create_requests + after_creates
        self._outages.plan(kind, seconds=seconds, at_creates=at_creates)
        if after_creates <= 0:
            await self._outages.begin()

    @property
    def refusing(self) -> bool:
        """Whether a ``"refuse"`` outage is on: a transport should fail to connect."""
        return self._outages.kind == "refuse"

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

    async def release(self) -> None:
        """Wake every request held by a ``hang`` fault or a slow answer, and end any outage.

        Later waits return at once; call it when the API shuts down.
        """
        self._waits.release()
        await self._outages.ended()

    # --- the API origin ----------------------------------------------------------------------

    async def handle(self, request: EmulatedRequest) -> EmulatedResponse:
        """Answer one request to the API origin as WorldRouter would, faults included.

        Raises:
            NoAnswer: the server closes the connection instead (a drop, a hang that ended,
                a ``"refuse"`` outage).
        """
        if request.path.startswith("/_emulator/"):
            return _tagged(self._stats()) if request.path == STATS_PATH else NOT_FOUND
        route: Route = "create" if request.method == "POST" else "poll"
        if route == "create":
            await self._outages.begin_if_due(self.counters.create_requests)
        if self._outages.kind is not None:
            return _tagged(self._outages.answer())
        if self._record:
            self.requests.append((self.clock.now(), route, request.path))
            if route == "create":
                self.idempotency_keys.append(request.header("Idempotency-Key"))
        if self._bucket is not None and (wait := self._bucket.take()) > 0:
            return self._rate_limited(wait)
        self.counters.per_second[int(self.clock.now())] += 1
        fault = self._faults.take(route) or self._faults.roll(
            self._random, self.fail_rate, self.drop_rate
        )
        if fault is not None and not fault.kind.endswith("_after_create"):
            return _tagged(await self._play(fault))
        if self.slow_rate and self._random.random() < self.slow_rate:
            await self._waits.sleep(self.slow_delay)
        endpoint = self._endpoint(request)
        if isinstance(endpoint, EmulatedResponse):  # no such route: aiohttp's own answer
            return endpoint
        answer = endpoint(request)
        if fault is not None:  # the task was created; now lose or garble the answer
            answer = await self._play(fault)
        return _tagged(answer)

    def _endpoint(self, request: EmulatedRequest) -> Endpoint | EmulatedResponse:
        """The method answering `request`'s path and method, or the routing error."""
        path, method = request.path, request.method
        if path == CREATE_PATH:
            return self._create if method == "POST" else method_not_allowed("POST")
        if _POLL_PATH.fullmatch(path):
            return self._retrieve if method in _READS else method_not_allowed("GET,HEAD")
        return NOT_FOUND

    def _create(self, request: EmulatedRequest) -> EmulatedResponse:
        self.counters.create_requests += 1
        if (denied := self._check_auth(request)) is not None:
            return denied
        key = request.header("Idempotency-Key")
        known = self._idempotency.get(key) if key else None
        if known is not None and not self.ignore_idempotency and known in self.tasks:
            self.counters.idempotent_replays += 1
            return self._task_answer(self.tasks[known], status="queued")
        if len(request.body) > MAX_BODY:
            return text_answer(
                413,
                f"Maximum request body size {MAX_BODY} exceeded, "
                f"actual body size {len(request.body)}",
            )
        try:
            body = json.loads(request.body.decode("utf-8"))
        except ValueError:
            return error_answer(
                400, "request body must be JSON", "invalid_json", "invalid_request_error"
            )
        if not isinstance(body, dict):
            return error_answer(
                400, "request body must be an object", "invalid_json", "invalid_request_error"
            )
        if (problem := validate_create(body, self.models)) is not None:
            return error_answer(400, problem[1], problem[0], "invalid_request_error")
        task = new_task(
            body,
            now=self.clock.now(),
            rng=self._random,
            time_scale=self.time_scale,
            n_cap=self.n_cap,
        )
        self.tasks[task.id] = task
        self.counters.creates += 1
        if known is not None:
            self.counters.duplicate_creates += 1
        if key:
            self._idempotency[key] = task.id
        return self._task_answer(task, status="queued")

    def _retrieve(self, request: EmulatedRequest) -> EmulatedResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        task_id = request.path.rpartition("/")[2]
        self.counters.polls += 1
        self.counters.polls_by_task[task_id] += 1
        task = self.tasks.get(task_id)
        if task is None:
            return error_answer(
                404, f"No task found with id '{task_id}'", "task_not_found", "invalid_request_error"
            )
        return self._task_answer(task, status=task.status(self.clock.now()))

    def _task_answer(self, task: EmulatedTask, *, status: str) -> EmulatedResponse:
        body = task_body(
            task, status=status, storage_url=self.storage_url, url_generation=self._url_generation
        )
        return json_answer(body, headers=(("x-request-id", request_id()),))

    def _stats(self) -> EmulatedResponse:
        completed_at = {t.id: t.finishes_at for t in self.tasks.values() if t.outcome != "never"}
        return json_answer({**self.counters.as_dict(), "completed_at": completed_at})

    def _check_auth(self, request: EmulatedRequest) -> EmulatedResponse | None:
        if request.header("Authorization") == f"Bearer {self.api_key}":
            return None
        return error_answer(
            401, "Incorrect API key provided.", "invalid_api_key", "authentication_error"
        )

    # --- the storage origin ------------------------------------------------------------------

    async def handle_storage(self, request: EmulatedRequest) -> EmulatedResponse:
        """Answer one request to the storage origin: an image, or 403 once its URL expired.

        It counts requests that (wrongly) carry an Authorization header.

        Raises:
            NoAnswer: a ``drop`` or ``hang`` fault injected on the ``storage`` route.
        """
        match = _IMAGE_PATH.fullmatch(request.path)
        if match is None:
            return NOT_FOUND
        if request.method not in _READS:
            return method_not_allowed("GET,HEAD")
        self.counters.storage_requests += 1
        if request.header("Authorization") is not None:
            self.counters.storage_auth_headers += 1
        if (fault := self._faults.take("storage")) is not None:
            return await self._play(fault)
        if request.query.get("v", "0") != str(self._url_generation):
            return text_answer(403, "Request has expired")
        task = self.tasks.get(match[1])
        if task is None:
            return NOT_FOUND
        # The picture depends on the request, not the task ID: the same prompt looks the
        # same in every run, and distinct prompts (or images of one task) look different.
        index = match[2].partition(".")[0]
        width, height = image_size(task)
        body = preview_png(f"{task.model}\n{task.prompt}\n{index}", width, height)
        return EmulatedResponse(200, (("Content-Type", "image/png"),), body)

    # --- faults ------------------------------------------------------------------------------

    async def _play(self, fault: Fault) -> EmulatedResponse:
        """The answer `fault` gives, or `NoAnswer` (after holding a hang until `release`)."""
        kind = fault.kind
        if kind == "429":
            return self._rate_limited(fault.retry_after if fault.retry_after is not None else 1.0)
        self.counters.faults[kind] += 1
        if (answer := fault_answer(kind)) is not None:
            return answer
        if kind in ("hang", "hang_after_create"):
            await self._waits.sleep(math.inf)
        raise NoAnswer(kind)

    def _rate_limited(self, wait: float) -> EmulatedResponse:
        self.counters.faults["429"] += 1
        self.counters.rate_limited += 1
        return rate_limited_answer(wait)

    async def _stop_accepting(self) -> None:
        """Refuse new connections and drop open ones; a server overrides this (no-op here)."""

    async def _resume_accepting(self) -> None:
        """Accept connections again after a ``"refuse"`` outage; a server overrides this."""


def _tagged(answer: EmulatedResponse) -> EmulatedResponse:
    """`answer` with an ``x-request-id`` header, as every API answer carries one."""
    if any(name == "x-request-id" for name, _ in answer.headers):
        return answer
    return EmulatedResponse(
        answer.status, (*answer.headers, ("x-request-id", request_id())), answer.body
    )
