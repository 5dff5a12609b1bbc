"""`Session`: the entry point that owns the API client, the poller and their lifetime."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import os
import time
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio
from yarl import URL

from ._api import APIClient, Secret
from ._clock import SYSTEM_CLOCK, Clock
from ._config import (
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    default_poll_policy,
    default_retry_policy,
)
from ._creates import AbandonedLog, AbandonedTask, Creates
from ._download import Downloader, safe_name
from ._errors import (
    AmbiguousCreateError,
    ConfigurationError,
    InvalidRequestError,
    WorldRouterError,
    WrongEventLoopError,
)
from ._events import DEFAULT_BUFFER, StatusFeed, StatusListener, StatusStream
from ._handles import ImageResult, TaskHandle, as_completed
from ._images import ImageBytes
from ._logs import configure_from_env
from ._pipeline import Pipeline, RequestLike
from ._poller import Poller, unpollable
from ._stats import Counters, SessionStats
from ._support import check_support, warn_ignored_in_file
from ._transports.aiohttp import AiohttpTransport
from ._transports.base import AsyncTransport
from ._transports.network import NetworkSettings, Verify
from .models import ImageData, ImageRequest, ImageTask, converter

DEFAULT_BASE_URL: Final = "https://inference-api-pre-d80ca3.worldrouter.ai/v1"
API_KEY_ENV: Final = "WORLDROUTER_API_KEY"
BASE_URL_ENV: Final = "WORLDROUTER_BASE_URL"


def _resolve_api_key(api_key: str | None) -> Secret:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if key is None:
        raise ConfigurationError(
            f"no API key: pass Session(api_key=...) or set the {API_KEY_ENV} environment variable"
        )
    if not key.strip():
        raise ConfigurationError(f"the API key is empty; set {API_KEY_ENV} to your WorldRouter key")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise ConfigurationError(
            "the API key contains control characters (a stray newline?); paste it again"
        )
    return Secret(key)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _resolve_base_url(base_url: str | None, *, allow_insecure: bool) -> str:
    raw = base_url if base_url is not None else os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL)
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r} (got {raw!r})"
        )
    if url.user is not None or url.password is not None:
        raise ConfigurationError(
            f"base_url must not contain credentials (got a URL with '@' for host {url.host!r}); "
            "pass the API key as api_key="
        )
    if url.scheme == "http" and not allow_insecure and not _is_loopback(url.host):
        raise ConfigurationError(
            f"refusing plain http:// to {url.host!r}: the API key would travel unencrypted. "
            "Use https://, or pass allow_insecure=True for a trusted network"
        )
    if url.query_string or url.fragment:
        raise ConfigurationError(f"base_url must not have a query or fragment (got {raw!r})")
    return str(url).rstrip("/")


def _build_request(model: str, prompt: str, params: Mapping[str, Any]) -> ImageRequest:
    return converter.structure({"model": model, "prompt": prompt, **params}, ImageRequest)


def _new_idempotency_key() -> str:
    """A random version-4 UUID as text, for one create.

    `str(uuid.uuid4())` builds a UUID object first (about 4.5 us); formatting 16 random
    bytes directly costs under half of that, on every create.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Tasks:
    """Low-level task endpoints: one create or one retrieve, no polling."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def create(
        self, model: str, prompt: str, *, idempotency_key: str | None = None, **params: Any
    ) -> ImageTask:
        """Create one task (``POST /images/generation_tasks``) and return it as queued.

        Example:
            >>> task = await session.tasks.create("gpt-image-2", "a kite")  # doctest: +SKIP
        """
        request = _build_request(model, prompt, params)
        return await self._session.create_task(request, idempotency_key=idempotency_key)

    async def retrieve(self, task_id: str) -> ImageTask:
        """Fetch a task's current state once, retrying transient failures."""
        self._session._check_open()
        return await self._session._api.retrieve(_check_task_id(task_id))


def _check_task_id(task_id: object) -> str:
    """`task_id` if a poll URL can name it: never blank, ``.`` or ``..``.

    Those would name no task, or turn the poll URL into another endpoint once dot segments
    are resolved; any other id (``/`` included) is percent-encoded into one path segment by
    the transport.
    """
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidRequestError(f"task_id must be a non-empty string (got {task_id!r})")
    if task_id in (".", ".."):
        raise InvalidRequestError(
            f"task_id {task_id!r} is not a task id: a poll of it would request another "
            "endpoint; pass the id exactly as the create returned it"
        )
    return task_id


class Session:
    """A connection to WorldRouter that submits tasks and tracks them with one poller.

    Open it with ``async with``; leaving the block stops the poller and ends every pending
    handle with `SessionClosedError`.

    Args:
        api_key: defaults to the ``WORLDROUTER_API_KEY`` environment variable.
        base_url: defaults to ``WORLDROUTER_BASE_URL``, else the documented API URL.
        timeouts: how long connects, API requests and downloads may take (`Timeouts`).
        retry: how failed requests are retried (default `RetryPolicy()`).
        poll: when pending tasks are polled (default `PollPolicy()`); both defaults become
            millisecond versions under `worldrouter_async.testing.set_testing`.
        limits: connections, polls, creates and downloads at once, answer and image size
            caps, and an optional request rate, for the whole session (`Limits`).
        task_timeout: seconds a handle waits for its task before `TaskTimeoutError`
            (``math.inf`` waits forever); `submit` and `track` can override it.
        strict: raise `IgnoredParameterError` instead of warning when a model would
            ignore a parameter.
        allow_insecure: allow a plain ``http://`` base URL to a non-loopback host.
        on_status: a plain function called as ``on_status(change)`` with a `StatusChange`
            on every status change, including local endings (timeout, cancel, close); an
            ``async def`` function is refused with `TypeError` (see `status_changes`).
        retry_ambiguous_creates: resend a create that may have reached the server with the
            same ``Idempotency-Key``. Turn it on only if your deployment deduplicates creates
            by that key: the API documentation does not promise it, so the default is off
            and an ambiguous create raises `AmbiguousCreateError`.
        clock: where polls, retries, rate-limit pauses and deadlines read the time; tests
            pass a `worldrouter_async.testing.FakeClock` to run them on virtual time.
        proxy: a proxy URL for API calls and downloads, such as
            ``"http://user:pass@proxy.example:3128"`` (its credentials never appear in a
            repr, log line or error); overrides the environment.
        trust_env: read ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR`` when the session opens (default True, as curl and httpx do).
        verify: TLS certificate checks: True (the system's CAs), a CA bundle file or
            directory (your private CA instead), an `ssl.SSLContext`, or False (off: warns
            with `InsecureConnectionWarning`).
        transport: how requests reach the API: any `AsyncTransport`, such as
            `worldrouter_async.testing.MemoryTransport` in your tests (no sockets); the
            session closes it when it closes. Default: aiohttp, with ``proxy``,
            ``trust_env`` and ``verify`` (which then apply to downloads alone).

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with Session() as session:
        ...         result = await session.generate("gpt-image-2", "a lighthouse at dusk")
        ...         print(result.urls)
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        limits: Limits = Limits(),
        task_timeout: float = 900.0,
        strict: bool = False,
        allow_insecure: bool = False,
        on_status: StatusListener | None = None,
        retry_ambiguous_creates: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        proxy: str | None = None,
        trust_env: bool = True,
        verify: Verify = True,
        transport: AsyncTransport | None = None,
    ) -> None:
        if not task_timeout > 0:
            raise ConfigurationError(f"task_timeout must be positive (got {task_timeout!r})")
        self._feed = StatusFeed(on_status)  # first: refuses an async on_status at once
        retry = retry or default_retry_policy()
        poll = poll or default_poll_policy()
        self.base_url: Final = _resolve_base_url(base_url, allow_insecure=allow_insecure)
        self._network = NetworkSettings(proxy=proxy, trust_env=trust_env, verify=verify)
        self._counters = Counters()
        self._wire = transport
        self._timeouts = timeouts
        self._api = APIClient(
            base_url=self.base_url,
            api_key=_resolve_api_key(api_key),
            timeouts=timeouts,
            retry=retry,
            limits=limits,
            counters=self._counters,
            clock=clock,
            retry_ambiguous_creates=retry_ambiguous_creates,
        )
        self._poller = Poller(
            self._api.poll,
            policy=poll,
            retry=retry,
            throttle=self._api.throttle,
            max_inflight=limits.max_inflight_polls,
            counters=self._counters,
            events=self._feed,
            clock=clock,
            poll_timeout=timeouts.request,
        )
        self._untrack = self._cancelled  # one bound method shared by every handle
        self._abandoned = AbandonedLog()
        self._creates = Creates(self._api.create, self._abandoned)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._downloader = Downloader(timeouts=timeouts, limits=limits, retry=retry, clock=clock)
        self._limits = limits
        self._task_timeout = task_timeout
        self._strict = strict
        self._retry_ambiguous_creates = retry_ambiguous_creates
        self._runner: asyncio.Task[None] | None = None
        self._state = "new"
        self.tasks: Final = Tasks(self)

    def __repr__(self) -> str:
        return f"<Session {self.base_url!r} {self._state} pending={self._poller.pending}>"

    @property
    def transport(self) -> APIClient:
        """Deprecated: the session's internal API client, not a transport; pass
        ``Session(transport=...)`` to choose how requests are sent."""
        warnings.warn(
            "Session.transport is deprecated: it was the internal API client, not a "
            "transport; pass Session(transport=...) (an AsyncTransport) to choose how "
            "requests are sent",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._api

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"a Session can be opened once; this one is {self._state}")
        configure_from_env()
        self._loop = asyncio.get_running_loop()
        network = self._network.resolve()
        wire = self._wire
        if wire is None:
            wire = AiohttpTransport(
                network, api_url=self._api.tasks_url, timeouts=self._timeouts, limits=self._limits
            )
        self._api.open(wire)
        self._downloader.open(network)
        started = asyncio.Event()
        self._runner = asyncio.get_running_loop().create_task(
            self._run_poller(started), name=f"worldrouter-async poller {self.base_url}"
        )
        try:
            await started.wait()
        except BaseException:  # cancelled while opening: leave nothing running behind
            await self.aclose()
            raise
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the poller, fail pending handles with `SessionClosedError`, close the pool.

        Safe to call from any task, and more than once.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        self._poller.close()
        self._feed.close()
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                runner.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([runner])
        finally:
            with anyio.CancelScope(shield=True):
                await self._downloader.aclose()
                await self._api.aclose()
                await self._creates.aclose()

    async def _run_poller(self, started: asyncio.Event) -> None:
        """Run the poller until the session closes; if it ever stops on an error (a bug),
        end every handle with `PollerFailedError` rather than leave them waiting."""
        try:
            async with anyio.create_task_group() as task_group:
                started.set()
                await self._poller.run(task_group)
        except Exception as exc:  # a bug: the error ends every handle and is logged
            self._poller.fail(exc)

    def _cancelled(self, handle: TaskHandle) -> None:
        """A handle's tracking was cancelled: stop polling it and report the ending."""
        self._poller.untrack(handle)
        self._feed.ended(handle)

    def status_changes(self, *, buffer: int = DEFAULT_BUFFER) -> StatusStream:
        """An async iterator of every `StatusChange` of this session from now on.

        Each stream buffers up to `buffer` changes; when its reader falls that far behind,
        the oldest change is dropped and counted in `StatusStream.dropped`, so the poller
        never waits for a reader. Iteration ends when the session closes, after the
        ``closed`` endings of the tasks still pending. Open it before submitting to see
        every change of those tasks.

        Example:
            >>> async def main(session):  # doctest: +SKIP
            ...     async with session.status_changes() as changes:
            ...         async for change in changes:
            ...             print(change.task_id, change.new, change.final)
        """
        return self._feed.subscribe(buffer)

    @property
    def retry_ambiguous_creates(self) -> bool:
        """Whether creates that may have reached the server are resent with the same key."""
        return self._retry_ambiguous_creates

    @property
    def stats(self) -> SessionStats:
        """Counts of creates, polls, retries, pauses, outcomes and summed token usage."""
        return self._counters.snapshot()

    @property
    def abandoned(self) -> tuple[AbandonedTask, ...]:
        """Tasks created for a caller that was cancelled (or left early) before it got the
        handle, oldest first; the most recent 10,000 are kept.

        Cancelling `generate`, `submit_many`, `submit` or a `pipeline` (or leaving a pipeline
        early) stops tracking the tasks it created that no caller got a handle for, and lists
        them here (and in a WARNING log line): ``session.track(record.task_id)`` gets a
        result. A record without a task id is a create cut off mid-flight, which may or may
        not have created a task: its idempotency key is kept.
        """
        return self._abandoned.snapshot()

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(
                f"the session is {self._state}; use it inside 'async with Session(...)'"
            )
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not self._loop:
            raise WrongEventLoopError(
                "this Session belongs to the event loop it was opened on, and is used here "
                f"from {'another event loop' if loop else 'no running event loop'} (another "
                "thread?): its connections and poller work on that loop only. Open a Session "
                "per event loop, with 'async with Session(...)' inside the loop that uses it"
            )
        if (failure := self._poller.failure) is not None:
            raise RuntimeError(
                f"the session's poller stopped on an internal error ({type(failure).__name__}: "
                f"{failure}), so nothing more is sent; open a new Session"
            ) from failure

    def _abandon(self, handles: Iterable[TaskHandle], reason: str) -> None:
        """Stop tracking `handles`, which no caller will get, and record their task ids."""
        now = time.time()
        records = []
        for handle in handles:
            if handle.task_id is not None:
                handle._abandon(reason)
                records.append(
                    AbandonedTask(handle.task_id, None, handle.status, handle.request, reason, now)
                )
            elif isinstance(error := handle.exception(), AmbiguousCreateError):
                key = error.idempotency_key  # its create may have made a task
                records.append(AbandonedTask(None, key, None, handle.request, reason, now))
        self._abandoned.add(records)

    async def create_task(
        self, request: ImageRequest, *, idempotency_key: str | None = None
    ) -> ImageTask:
        """Validate `request` against its model, then create it once (no polling)."""
        self._check_open()
        check_support(request, strict=self._strict)
        return await self._create(request, idempotency_key=idempotency_key)

    async def _create(self, request: ImageRequest, *, idempotency_key: str | None) -> ImageTask:
        """Create `request` once; its support check has already been made."""
        return await self._creates.create(request, idempotency_key or _new_idempotency_key())

    async def submit(
        self,
        model: str,
        prompt: str,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> TaskHandle:
        """Create a task and return its handle once the create is accepted.

        Args:
            timeout: seconds to wait for the result (default: the session's task_timeout).
            idempotency_key: sent as the ``Idempotency-Key`` header (default: a new UUID).
                Reusing the key of a create that may have reached the server avoids a
                second paid task only if your deployment deduplicates creates by that key.
            params: any `ImageRequest` field: n, size, quality, output_format, user, extra...

        Example:
            >>> handle = await session.submit("gpt-image-2", "a fox")  # doctest: +SKIP
            >>> result = await handle  # doctest: +SKIP
        """
        request = _build_request(model, prompt, params)
        return await self.submit_request(request, timeout=timeout, idempotency_key=idempotency_key)

    async def submit_request(
        self,
        request: ImageRequest,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> TaskHandle:
        """`submit` for a prepared `ImageRequest`."""
        self._deadline(timeout)
        task = await self.create_task(request, idempotency_key=idempotency_key)
        return self._track(task.task_id or task.id, request=request, task=task, timeout=timeout)

    def _report_ignored(self, request: ImageRequest, *, source: str, line: int) -> None:
        """Warn, naming `source` and `line`, if `request`'s model ignores a parameter.

        Strict sessions stay silent here: they refuse the request when it is created.
        """
        if not self._strict:
            warn_ignored_in_file(request, filename=source, lineno=line)

    async def _submit_reported(
        self,
        request: ImageRequest,
        *,
        timeout: float | None,
        idempotency_key: str | None,
    ) -> TaskHandle:
        """`submit_request` for a request whose ignored parameters its caller has reported.

        The batch runner names the JSONL line or the request's key instead of a Python line,
        so only strict mode is enforced here, without a second warning.
        """
        self._check_open()
        self._deadline(timeout)
        if self._strict:
            check_support(request, strict=True)
        task = await self._create(request, idempotency_key=idempotency_key)
        return self._track(task.task_id or task.id, request=request, task=task, timeout=timeout)

    async def submit_many(
        self,
        requests: Iterable[RequestLike],
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
    ) -> list[TaskHandle]:
        """Submit many requests concurrently; one handle per request, in input order.

        A request that fails validation or whose create fails still gets a handle, which
        raises that error when awaited: nothing is dropped. If the call is cancelled, the
        tasks already created stop being tracked and are listed in `abandoned`.

        Example:
            >>> handles = await session.submit_many(  # doctest: +SKIP
            ...     [{"model": "gpt-image-2", "prompt": p} for p in prompts], concurrency=8
            ... )
        """
        self._check_open()
        items = list(requests)
        limit = concurrency if concurrency is not None else self._limits.max_concurrent_creates
        if limit < 1:
            raise InvalidRequestError(f"concurrency must be at least 1 (got {limit!r})")
        self._deadline(timeout)
        # Checked here, in the caller's frame, so a warning points at the caller's line
        # (the workers below run in tasks of their own, with no user code on the stack).
        handles: list[TaskHandle | ImageRequest] = [self._prepare(item) for item in items]
        work = iter(enumerate(handles))

        async def submit_worker() -> None:
            # A fixed pool of `limit` workers: no task per request, whatever the count.
            for index, prepared in work:
                if isinstance(prepared, ImageRequest):
                    handles[index] = await self._submit_prepared(prepared, timeout=timeout)

        try:
            async with anyio.create_task_group() as task_group:
                for _ in range(min(limit, len(items))):
                    task_group.start_soon(submit_worker)
        except BaseException:  # cancelled: no caller gets these handles
            created = (handle for handle in handles if isinstance(handle, TaskHandle))
            self._abandon(created, "submit_many was cancelled")
            raise
        return [handle for handle in handles if isinstance(handle, TaskHandle)]

    def pipeline(
        self,
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        *,
        max_pending: int = 64,
        ordered: bool = False,
        timeout: float | None = None,
    ) -> Pipeline:
        """Run a stream of requests through a window of at most `max_pending` tasks.

        `requests` may be endless (a generator, or an async generator fed by a queue): a
        request is taken only when the window has room, and a finished handle holds its
        place until you take it, so a reader that stops reading stops new creates. Yields
        done handles, first finished first (``ordered=True``: in input order); a failed
        request yields a handle that raises its error. Leaving the block stops creating
        and stops tracking unfinished tasks.

        Args:
            max_pending: requests being created, tasks pending, and finished handles not
                yet taken, together.
            ordered: yield in input order; one slow task then holds back the others.
            timeout: seconds each task may take (default: the session's task_timeout).

        Example:
            >>> async def main(session, prompts):  # doctest: +SKIP
            ...     requests = ({"model": "gpt-image-2", "prompt": p} for p in prompts)
            ...     async with session.pipeline(requests, max_pending=16) as handles:
            ...         async for handle in handles:
            ...             print(handle.task_id, handle.exception() or handle.result().urls)
        """
        self._check_open()
        if max_pending < 1:
            raise InvalidRequestError(f"max_pending must be at least 1 (got {max_pending!r})")
        self._deadline(timeout)
        return Pipeline(
            functools.partial(self._submit_streamed, timeout=timeout),
            requests,
            max_pending=max_pending,
            ordered=ordered,
            workers=self._limits.max_concurrent_creates,
            abandon=self._abandon,
        )

    async def _submit_streamed(
        self, item: RequestLike, index: int, *, timeout: float | None
    ) -> TaskHandle:
        """Submit the `index`-th request of a pipeline (from 0); failures become handles.

        It runs in a pipeline worker, with no user code on the stack, so a warning about an
        ignored parameter names the request's place in the input instead of a line. Once
        the session has closed it raises, which stops the pipeline.
        """
        if self._state != "open":
            raise RuntimeError(
                f"the session closed while its pipeline was running: request {index} was "
                "not submitted and no later request is taken from the input; tasks still "
                "pending end with SessionClosedError (track their task ids from a new session)"
            )
        prepared = self._prepare(item, source=f"<pipeline request {index}>")
        if isinstance(prepared, TaskHandle):
            return prepared
        return await self._submit_prepared(prepared, timeout=timeout)

    def _prepare(
        self, item: RequestLike, *, source: str | None = None
    ) -> ImageRequest | TaskHandle:
        """`item` as a request checked against its model, or a failed handle saying why.

        A warning about an ignored parameter points at the caller's line, or names `source`.
        """
        try:
            request = converter.structure(item, ImageRequest)
        except WorldRouterError as exc:
            return TaskHandle.failed(exc)
        try:
            if source is None or self._strict:
                check_support(request, strict=self._strict)
            else:
                self._report_ignored(request, source=source, line=0)
        except WorldRouterError as exc:
            return TaskHandle.failed(exc, request=request)
        return request

    async def _submit_prepared(self, request: ImageRequest, *, timeout: float | None) -> TaskHandle:
        """Create a checked request and track it; a create error becomes a failed handle."""
        try:
            self._check_open()
            task = await self._create(request, idempotency_key=None)
        except WorldRouterError as exc:
            return TaskHandle.failed(exc, request=request)
        return self._track(task.task_id or task.id, request=request, task=task, timeout=timeout)

    def _deadline(self, timeout: float | None) -> float:
        """`timeout` checked, or the session's default: called before any paid create, so a
        bad value never strands a task that was already paid for."""
        deadline = self._task_timeout if timeout is None else timeout
        if not deadline > 0 or math.isnan(deadline):
            raise InvalidRequestError(f"timeout must be positive seconds (got {timeout!r})")
        return deadline

    def track(self, task_id: str, *, timeout: float | None = None) -> TaskHandle:
        """Attach to a task created earlier (by another process, or before a restart).

        Example:
            >>> result = await session.track("imgtask_123")  # doctest: +SKIP
        """
        self._check_open()
        return self._track(task_id, request=None, task=None, timeout=timeout)

    def _track(
        self,
        task_id: str,
        *,
        request: ImageRequest | None,
        task: ImageTask | None,
        timeout: float | None,
    ) -> TaskHandle:
        try:
            _check_task_id(task_id)
        except InvalidRequestError as exc:
            if task is None:
                raise
            handle = unpollable(task, request, exc)  # created: keep the receipt
            self._counters.failed += 1
            self._feed.ended(handle)
            return handle
        deadline = self._deadline(timeout)
        handle = TaskHandle(task_id, request=request, task=task, on_cancel=self._untrack)
        self._poller.track(handle, timeout=deadline, fresh=task is not None)
        return handle

    async def generate(
        self, model: str, prompt: str, *, timeout: float | None = None, **params: Any
    ) -> ImageResult:
        """Submit one task and wait for its result.

        If the call is cancelled once the task exists (a web client that disconnected), the
        task stops being tracked and is listed in `abandoned`, where its id can be found.

        Example:
            >>> result = await session.generate("gpt-image-2", "a kite")  # doctest: +SKIP
        """
        handle = await self.submit(model, prompt, timeout=timeout, **params)
        try:
            await handle._settled()
        except BaseException:  # cancelled: nobody else has this handle
            self._abandon((handle,), "generate was cancelled")
            raise
        return handle.result()

    def as_completed(self, handles: Iterable[TaskHandle]) -> AsyncIterator[TaskHandle]:
        """Yield `handles` in the order they finish (see `worldrouter_async.as_completed`)."""
        return as_completed(handles)

    async def download(
        self, source: ImageResult | str, dest: str | os.PathLike[str]
    ) -> tuple[Path, ...]:
        """Save images to disk atomically; the extension follows the image's bytes.

        For an `ImageResult`, `dest` is a directory and files are named
        ``TASKID-INDEX.ext``, one per image (stored or inline); for a single URL, `dest` is
        the file path (or a directory). The storage origin never receives the API key. An
        empty body, or bytes that are not a PNG, JPEG, WebP or GIF image, is a `DownloadError`.

        Example:
            >>> paths = await session.download(result, "out/")  # doctest: +SKIP
        """
        self._check_open()
        target = Path(dest)
        if isinstance(source, ImageResult):
            return await self.download_urls(source.images, target, stem=source.task_id)
        if await anyio.Path(target).is_dir():
            target = target / safe_name(Path(URL(source).path).stem)
        elif target.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bin"):
            target = target.with_suffix("")
        return (await self._downloader.download(source, target),)

    async def download_urls(
        self,
        urls: Sequence[str | ImageData],
        directory: str | os.PathLike[str],
        *,
        stem: str,
    ) -> tuple[Path, ...]:
        """Save `urls` as ``directory/STEM-INDEX.ext`` (stem sanitized), paths in order.

        Each item is a stored URL or an `ImageData` (an inline ``b64_json`` one is decoded).
        """
        self._check_open()
        return await self._downloader.download_all(urls, Path(directory), stem=safe_name(stem))

    async def read(self, source: ImageResult | str) -> tuple[ImageBytes, ...]:
        """The images' bytes in memory, checked and bounded as `download` does; in order.

        For a web app that streams images or hands them to Pillow without a file: the
        storage never receives the API key, redirects are checked, each image is capped at
        `Limits.max_download_bytes`, one download with its retries takes at most
        `Timeouts.download`, and bytes that are not an image raise `DownloadError`.
        `source` is a result (every image, inline ones included) or one stored URL.

        Example:
            >>> (image,) = await session.read(result)  # doctest: +SKIP
            >>> picture = PIL.Image.open(io.BytesIO(image.data))  # doctest: +SKIP
        """
        self._check_open()
        if isinstance(source, ImageResult):
            return await self._downloader.read_all(source.images, stem=source.task_id)
        return (await self._downloader.read(source),)
