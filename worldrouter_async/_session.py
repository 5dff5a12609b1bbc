"""`Session`: the entry point that wires the API client, the poller and their lifetime.

`Session` builds its parts and offers thin public methods over them: `_settings` (key and
URL), `_requests` (preparation), `_submit` (the one path from a request to a handle),
`Pipeline`, and `_lifecycle` (opening, closing, the open-guard). It inherits the download
front-end (`_session_downloads`), its reports (`_session_reports`) and its deprecated
names (`_session_deprecated`); ``session.tasks`` is `_task_endpoints.Tasks`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Final, Self

from ._api import APIClient
from ._clock import SYSTEM_CLOCK, Clock
from ._config import (
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    default_poll_policy,
    default_retry_policy,
)
from ._creates import AbandonedLog, Creates
from ._download import Downloader
from ._errors import ConfigurationError, InvalidRequestError
from ._events import StatusFeed, StatusListener
from ._handles import ImageResult, TaskHandle, as_completed
from ._hooks import Hooks, Observer, TaskEnded
from ._lifecycle import Lifecycle
from ._log_events import LogEvents
from ._pipeline import Pipeline
from ._poller import Poller
from ._requests import RequestLike, build_request, check_timeout
from ._session_deprecated import DeprecatedSessionNames
from ._session_downloads import SessionDownloads
from ._session_reports import SessionReports
from ._settings import resolve_api_key, resolve_base_url
from ._stats import Counters
from ._submit import Submitter
from ._support import ALREADY_REPORTED, CALLER, InputLine, check_support
from ._task_endpoints import Tasks
from ._transports.base import AsyncTransport
from ._transports.network import NetworkSettings, Verify
from .models import ImageRequest, ImageTask


class Session(SessionReports, SessionDownloads, DeprecatedSessionNames):
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
        observers: objects with an ``on_event(event)`` method (`Observer`) told of every
            `Event`: requests, retries, rate-limit pauses, outages and each task's life.

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
        observers: Iterable[Observer] = (),
    ) -> None:
        if not task_timeout > 0:
            raise ConfigurationError(f"task_timeout must be positive (got {task_timeout!r})")
        self._feed = StatusFeed(on_status)  # first: refuses an async on_status at once
        retry = retry or default_retry_policy()
        poll = poll or default_poll_policy()
        self.base_url: Final = resolve_base_url(base_url, allow_insecure=allow_insecure)
        self._network = NetworkSettings(proxy=proxy, trust_env=trust_env, verify=verify)
        self._counters = Counters()
        self._hooks = Hooks(self._counters, self._feed, LogEvents(), *observers)
        self._wire = transport
        self._timeouts = timeouts
        self._api = APIClient(
            base_url=self.base_url,
            api_key=resolve_api_key(api_key),
            timeouts=timeouts,
            retry=retry,
            limits=limits,
            hooks=self._hooks,
            clock=clock,
            retry_ambiguous_creates=retry_ambiguous_creates,
        )
        self._poller = Poller(
            self._api.poll,
            policy=poll,
            retry=retry,
            throttle=self._api.throttle,
            max_inflight=limits.max_inflight_polls,
            hooks=self._hooks,
            clock=clock,
            poll_timeout=timeouts.request,
        )
        self._untrack = self._cancelled  # one bound method shared by every handle
        self._abandoned = AbandonedLog()
        self._creates = Creates(self._api.create, self._abandoned)
        self._downloader = Downloader(
            timeouts=timeouts, limits=limits, retry=retry, hooks=self._hooks, clock=clock
        )
        self._limits = limits
        self._submitter = Submitter(
            creates=self._creates,
            poller=self._poller,
            abandoned=self._abandoned,
            hooks=self._hooks,
            check_open=self._check_open,
            is_open=lambda: self._life.is_open,
            untrack=self._untrack,
            strict=strict,
            task_timeout=task_timeout,
        )
        self._retry_ambiguous_creates = retry_ambiguous_creates
        self._life = Lifecycle(
            api=self._api,
            poller=self._poller,
            feed=self._feed,
            creates=self._creates,
            downloader=self._downloader,
            network=self._network,
            transport=self._wire,
            timeouts=timeouts,
            limits=limits,
            name=self.base_url,
        )
        self.tasks: Final = Tasks(self)

    def __repr__(self) -> str:
        return f"<Session {self.base_url!r} {self._life.state} pending={self._poller.pending}>"

    async def __aenter__(self) -> Self:
        await self._life.open()
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
        await self._life.close()

    def _cancelled(self, handle: TaskHandle) -> None:
        """A handle's tracking was cancelled: stop polling it and report the ending."""
        self._poller.untrack(handle)
        self._hooks.emit(TaskEnded(handle))

    @property
    def retry_ambiguous_creates(self) -> bool:
        """Whether creates that may have reached the server are resent with the same key."""
        return self._retry_ambiguous_creates

    def _check_open(self) -> None:
        self._life.check_open()

    async def create_task(
        self, request: ImageRequest, *, idempotency_key: str | None = None
    ) -> ImageTask:
        """Validate `request` against its model, then create it once (no polling)."""
        return await self._submitter.create(request, idempotency_key=idempotency_key)

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
        request = build_request(model, prompt, params)
        return await self._submitter.submit(
            request, timeout=timeout, idempotency_key=idempotency_key
        )

    async def submit_request(
        self,
        request: ImageRequest,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        reported: bool = False,
    ) -> TaskHandle:
        """`submit` for a prepared `ImageRequest`.

        Args:
            reported: its ignored parameters were already reported with `report_ignored`
                (as a tool that reads requests from a file does, naming the file's line),
                so no second warning is issued; a strict session still refuses it.
        """
        return await self._submitter.submit(
            request,
            timeout=timeout,
            idempotency_key=idempotency_key,
            warn_at=ALREADY_REPORTED if reported else CALLER,
        )

    def report_ignored(self, request: ImageRequest, *, source: str, line: int = 0) -> None:
        """Warn, naming `source` and `line`, if `request`'s model ignores a parameter.

        For requests read from a file or another input with no Python line to point at:
        report each when it is read, then submit it with ``submit_request(...,
        reported=True)``. A strict session stays silent here: it refuses the request when
        it is submitted.
        """
        if not self._submitter.strict:
            check_support(request, strict=False, warn_at=InputLine(source, line))

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
        check_timeout(timeout, self._submitter.task_timeout)
        return await self._submitter.submit_many(items, workers=limit, timeout=timeout)

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
        check_timeout(timeout, self._submitter.task_timeout)
        return Pipeline(
            functools.partial(self._submitter.submit_streamed, timeout=timeout),
            requests,
            max_pending=max_pending,
            ordered=ordered,
            workers=self._limits.max_concurrent_creates,
            abandon=self._submitter.abandon,
        )

    def track(self, task_id: str, *, timeout: float | None = None) -> TaskHandle:
        """Attach to a task created earlier (by another process, or before a restart).

        Example:
            >>> result = await session.track("imgtask_123")  # doctest: +SKIP
        """
        self._check_open()
        return self._submitter.track(task_id, request=None, task=None, timeout=timeout)

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
            self._submitter.abandon((handle,), "generate was cancelled")
            raise
        return handle.result()

    def as_completed(self, handles: Iterable[TaskHandle]) -> AsyncIterator[TaskHandle]:
        """Yield `handles` in the order they finish (see `worldrouter_async.as_completed`)."""
        return as_completed(handles)
