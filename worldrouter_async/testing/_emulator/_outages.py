"""Gateway outages of the emulated API: planned, begun, answered and ended on the clock.

An outage begins at once or once a number of creates have arrived; while it lasts, every
API request gets a gateway's answer (``"502"``, ``"503"``, ``"504"``) or, for
``"refuse"``, no answer, and the server stops accepting connections until it ends.
`EmulatedAPI` asks `Outages` before answering anything; the server supplies the callables
that stop and resume accepting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from attrs import define

from ._counters import EmulatorCounters
from ._faults import OutageKind, Waits, gateway_answer
from ._messages import EmulatedResponse, NoAnswer


@define(frozen=True)
class _Plan:
    """An outage waiting for its create: `kind` for `seconds` once `at_creates` arrived."""

    kind: OutageKind
    seconds: float
    at_creates: int


class Outages:
    """The one outage planned or under way, if any, and its end on the clock.

    Args:
        waits: the emulator's waits: an outage ends after its length on their clock, or
            at once when they are released.
        stop_accepting: closes the listening socket and aborts open connections.
        resume_accepting: listens again once a ``"refuse"`` outage ends.
    """

    def __init__(
        self,
        *,
        counters: EmulatorCounters,
        waits: Waits,
        stop_accepting: Callable[[], Awaitable[None]],
        resume_accepting: Callable[[], Awaitable[None]],
    ) -> None:
        self._counters = counters
        self._waits = waits
        self._stop_accepting = stop_accepting
        self._resume_accepting = resume_accepting
        #: The outage under way, if any.
        self.kind: OutageKind | None = None
        self._plan: _Plan | None = None
        self._end: asyncio.Task[None] | None = None

    def plan(self, kind: OutageKind, *, seconds: float, at_creates: int) -> None:
        """Begin a `kind` outage of `seconds` once `at_creates` create requests arrived."""
        self._plan = _Plan(kind, seconds, at_creates)

    async def begin_if_due(self, create_requests: int) -> None:
        """Begin the planned outage if `create_requests` reached its mark."""
        if self._plan is not None and create_requests >= self._plan.at_creates:
            await self.begin()

    async def begin(self) -> None:
        """Begin the planned outage now (nothing if none is planned)."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        self.kind = plan.kind
        self._counters.outages += 1
        if plan.kind == "refuse":
            await self._stop_accepting()
        self._end = asyncio.get_running_loop().create_task(self._end_after(plan.seconds))

    def answer(self) -> EmulatedResponse:
        """A gateway's answer to a request during the outage; `NoAnswer` for ``"refuse"``."""
        if self.kind == "refuse":  # the request that began it: lost with the server
            raise NoAnswer("refuse")
        self._counters.outage_answers += 1
        return gateway_answer(int(self.kind or 502))

    async def ended(self) -> None:
        """Wait until the outage under way (if any) has ended."""
        if self._end is not None:
            await self._end

    async def _end_after(self, seconds: float) -> None:
        await self._waits.sleep(seconds)
        if self.kind == "refuse" and not self._waits.released:
            await self._resume_accepting()
        self.kind = None
