"""The one observer channel: emitters report frozen events to `Hooks`, subscribers react.

An emitter (today the poller) builds one event value and calls `Hooks.emit`; every
subscriber registered on the session's `Hooks` gets it through `Observer.on_event`. The
session's counters (`_stats.Counters`) and status feed (`_events.StatusFeed`) are
subscribers, so a new kind of event is one new type here and one `emit` call at its source;
a subscriber that cares adds one ``case`` (see docs/contributing.md).

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

import logging
from typing import Final, Protocol

from attrs import define

from ._handles import TaskHandle
from .models import Usage

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


Event = TaskTracked | TaskUntracked | TaskStatusChanged | TaskResolved | TaskEnded
"""Every kind of event an emitter may report."""


class Observer(Protocol):
    """A subscriber of `Hooks`: called synchronously on the emitter's path, so it must be
    quick and must not block or await."""

    def on_event(self, event: Event, /) -> None:
        """React to one event; events of kinds it does not know are ignored."""


class Hooks:
    """Fans each event out to the subscribed observers, in the order they subscribed.

    The subscribers are held in a tuple, resolved once per `subscribe`, so `emit` only
    loops; an observer that raises is logged and the others still get the event.
    """

    __slots__ = ("_observers",)

    def __init__(self, *observers: Observer) -> None:
        self._observers: tuple[Observer, ...] = observers

    def subscribe(self, observer: Observer) -> None:
        """Send every later event to `observer` too."""
        self._observers = (*self._observers, observer)

    def emit(self, event: Event) -> None:
        """Give `event` to every subscriber."""
        for observer in self._observers:
            try:
                observer.on_event(event)
            except Exception:
                logger.exception("an observer of %s raised", type(event).__name__)
