"""The one observer channel: emitters report frozen events to `Hooks`, subscribers react.

Each part of a session reports what happens as one event value through the session's one
`Hooks`: the API layer (`RequestAnswered`, `RequestFailed`, `TaskCreated`, `RetryScheduled`,
`RateLimitPaused`), the downloader (`RetryScheduled`), the outage breaker (`BreakerOpened`,
`BreakerProbeSent`, `BreakerClosed`) and the poller (the task events). Every subscriber gets
it through `Observer.on_event`: the counters (`_stats.Counters`), the status feed
(`_events.StatusFeed`), the log lines (`_log_events.LogEvents`) and the observers a user
passes as ``Session(observers=[...])``. A new kind of event is one new type here and one
`emit` call at its source; a subscriber that cares adds one ``case`` (docs/contributing.md).
The design follows aiohttp's ``TraceConfig`` (one frozen value per kind of event) and trio's
instruments (an observer that raises cannot break the code that emits).

Events are emitted synchronously, in the order things happen, and before the handle they
are about is settled, so a done-callback reading `Session.stats` sees them counted.

Example:
    >>> class Printer:
    ...     def on_event(self, event: Event) -> None:
    ...         print(type(event).__name__)
    >>> hooks = Hooks(Printer())
    >>> hooks.emit(TaskStatusChanged(TaskHandle("task-1"), "queued", "running"))
    TaskStatusChanged
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Final, Protocol

from attrs import define

from ._errors import APIConnectionError, APIError, RateLimitError
from ._handles import TaskHandle
from ._transports.base import WireRequest
from .models import ImageTask, Usage

logger: Final = logging.getLogger("worldrouter_async")


@define(frozen=True)
class TaskTracked:
    """The poller started tracking `handle`'s task."""

    handle: TaskHandle


@define(frozen=True)
class TaskUntracked:
    """The poller stopped tracking `handle`'s task (settled, cancelled or closed)."""

    handle: TaskHandle


@define(frozen=True)
class TaskStatusChanged:
    """A poll answered a status other than the last one seen for `handle` (`old` is None
    before the first)."""

    handle: TaskHandle
    old: str | None
    new: str


@define(frozen=True)
class TaskResolved:
    """The server decided how `handle` ends: it completed with images (`succeeded`), or it
    failed, completed without images, or a poll failed in a way no retry fixes.

    `usage` is the tokens a completed task reports. Endings the SDK decides (deadline,
    cancel, session close) are not resolutions; they are reported by `TaskEnded` alone.
    """

    handle: TaskHandle
    succeeded: bool
    usage: Usage | None = None


@define(frozen=True)
class TaskEnded:
    """`handle` has just been settled with an error (its `exception()` says which)."""

    handle: TaskHandle


@define(frozen=True)
class TaskCreated:
    """The API accepted a create: `task` is its answer (usually ``queued``, with its id)."""

    task: ImageTask


@define(frozen=True)
class RequestAnswered:
    """The API answered `request` with `status` (an error status too), `elapsed` seconds
    after it was sent.

    `attempt` counts the tries of one call from 1; `request_id` is the server's
    ``x-request-id``. `probe` is true for the outage breaker's recovery probe, a GET that
    creates nothing. The request's repr never shows the API key.
    """

    request: WireRequest
    status: int
    attempt: int
    request_id: str | None
    elapsed: float
    probe: bool = False


@define(frozen=True)
class RequestFailed:
    """No answer came for `request`: `error` says why (refused, dropped, timed out, TLS...).

    `attempt`, `elapsed` and `probe` are as in `RequestAnswered`.
    """

    request: WireRequest
    error: APIConnectionError
    attempt: int
    elapsed: float
    probe: bool = False


@define(frozen=True)
class RetryScheduled:
    """A create, a retrieve or a download failed with `error` and is tried again, as attempt
    number `attempt`, after `delay` seconds (0 after a 429: `RateLimitPaused` holds it)."""

    error: APIError
    delay: float
    attempt: int


@define(frozen=True)
class RateLimitPaused:
    """A 429 (`error`) paused every request of the session for `seconds`: its Retry-After,
    or the first backoff when it gave none. A 429 within a pause already longer is not
    reported again."""

    seconds: float
    error: RateLimitError


@define(frozen=True)
class BreakerOpened:
    """The API looks down after `failures` connection failures or 502/503/504 in a row:
    requests wait while probes ask whether it is back."""

    failures: int


@define(frozen=True)
class BreakerProbeSent:
    """The outage breaker sent recovery probe number `number` (from 1) of this outage."""

    number: int


@define(frozen=True)
class BreakerClosed:
    """An answer came through after an outage of `outage` seconds: requests resume."""

    outage: float


Event = (
    TaskTracked
    | TaskUntracked
    | TaskStatusChanged
    | TaskResolved
    | TaskEnded
    | TaskCreated
    | RequestAnswered
    | RequestFailed
    | RetryScheduled
    | RateLimitPaused
    | BreakerOpened
    | BreakerProbeSent
    | BreakerClosed
)
"""Every kind of event a session reports to its observers (match on the type)."""


class Observer(Protocol):
    """Anything with an ``on_event(event)`` method: pass it as ``Session(observers=[...])``
    to learn what the session does (requests, retries, pauses, outages, each task's life).

    It is called synchronously where the event happens, on the event loop, so it must be
    quick and must not block or await (to do slow work, put the event on a queue). An
    observer that raises is logged once, and the session goes on. Later versions may add
    kinds of events: ignore the ones you do not know.

    Example:
        >>> class Retries:
        ...     def __init__(self) -> None:
        ...         self.seen: list[RetryScheduled] = []
        ...     def on_event(self, event: Event) -> None:
        ...         if isinstance(event, RetryScheduled):
        ...             self.seen.append(event)
        >>> session = Session("key", observers=[Retries()])  # doctest: +SKIP
    """

    def on_event(self, event: Event, /) -> None:
        """React to one event; events of kinds it does not know are ignored."""


_OnEvent = Callable[[Event], None]


class Hooks:
    """Fans each event out to the subscribed observers, in the order they subscribed.

    An observer with an ``event_kinds`` attribute (a tuple of event types, as the session's
    own subscribers have) gets only events of those types; any other gets every event.
    Which observers an event type goes to is worked out on its first `emit` and kept, so
    `emit` is one dict lookup and a loop, and an event no subscriber wants costs little
    more. An observer that raises is logged the first time (with its traceback), stays
    subscribed, and the others still get the event.
    """

    __slots__ = ("_failed", "_observers", "_routes")

    def __init__(self, *observers: Observer) -> None:
        for observer in observers:
            _check_observer(observer)
        self._observers: tuple[Observer, ...] = observers
        self._routes: dict[type, tuple[tuple[Observer, _OnEvent], ...]] = {}
        self._failed: set[int] = set()  # ids of the observers that raised (logged once)

    def subscribe(self, observer: Observer) -> None:
        """Send every later event (of its ``event_kinds``, if it has them) to `observer` too."""
        _check_observer(observer)
        self._observers = (*self._observers, observer)
        self._routes.clear()

    def emit(self, event: Event) -> None:
        """Give `event` to every subscriber that wants its type."""
        route = self._routes.get(type(event))
        if route is None:
            route = self._route(type(event))
        for observer, on_event in route:
            try:
                on_event(event)
            except Exception:
                self._report(observer, event)

    def _route(self, kind: type) -> tuple[tuple[Observer, _OnEvent], ...]:
        route = tuple(
            (observer, observer.on_event)
            for observer in self._observers
            if kind in getattr(observer, "event_kinds", (kind,))
        )
        self._routes[kind] = route
        return route

    def _report(self, observer: Observer, event: Event) -> None:
        """Log the first error of `observer`; its later errors are swallowed silently, so a
        broken observer cannot flood the log from the hot path."""
        if id(observer) in self._failed:
            return
        self._failed.add(id(observer))
        logger.exception(
            "an observer of %s raised (%r); it stays subscribed, and its later errors are "
            "not logged",
            type(event).__name__,
            observer,
        )


def _check_observer(observer: object) -> None:
    """Refuse what cannot observe: no ``on_event`` method, or an async one (nothing would
    await what it returns)."""
    on_event = getattr(observer, "on_event", None)
    if not callable(on_event):
        raise TypeError(
            f"observer {observer!r} has no on_event(event) method; pass objects with one, "
            "such as a class whose on_event matches the event types it cares about"
        )
    if inspect.iscoroutinefunction(on_event):
        raise TypeError(
            f"{observer!r}.on_event is async, and nothing would await it: observers are "
            "called synchronously; make on_event a plain method (put events on an "
            "asyncio.Queue to handle them in a task of your own)"
        )
