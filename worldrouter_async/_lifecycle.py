"""`Lifecycle`: a session's opening and closing, and the guard that it is used while open.

Opening connects the parts `Session` wired together: the wire (the transport given, else
aiohttp from the network settings), the download pool, and the poller's task. Closing stops
them in order, shielded from cancellation, whatever was running. `check_open` refuses a
session that is not open, is used from another event loop, or whose poller stopped on a
bug, before anything is sent.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

import anyio

from ._api import APIClient
from ._config import Limits, Timeouts
from ._creates import Creates
from ._download import Downloader
from ._errors import WrongEventLoopError
from ._events import StatusFeed
from ._logs import configure_from_env
from ._poller import Poller
from ._transports.aiohttp import AiohttpTransport
from ._transports.base import AsyncTransport
from ._transports.network import NetworkSettings


class SessionState(StrEnum):
    """Where a session is in its life: it opens once and closes once."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Lifecycle:
    """Opens and closes one session's parts, and says whether the session may be used.

    Args:
        transport: the wire to open the API client on; None builds the aiohttp transport
            from `network`, `timeouts` and `limits` when the session opens.
        name: names the poller's task (the session's base URL), for debuggers.
    """

    def __init__(
        self,
        *,
        api: APIClient,
        poller: Poller,
        feed: StatusFeed,
        creates: Creates,
        downloader: Downloader,
        network: NetworkSettings,
        transport: AsyncTransport | None,
        timeouts: Timeouts,
        limits: Limits,
        name: str,
    ) -> None:
        self._api = api
        self._poller = poller
        self._feed = feed
        self._creates = creates
        self._downloader = downloader
        self._network = network
        self._transport = transport
        self._timeouts = timeouts
        self._limits = limits
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self.state = SessionState.NEW

    @property
    def is_open(self) -> bool:
        """Whether the session is open (opened, and not closed since)."""
        return self.state is SessionState.OPEN

    async def open(self) -> None:
        """Open the wire and the download pool, and start the poller; once only."""
        if self.state is not SessionState.NEW:
            raise RuntimeError(f"a Session can be opened once; this one is {self.state}")
        configure_from_env()
        self._loop = asyncio.get_running_loop()
        network = self._network.resolve()
        wire = self._transport
        if wire is None:
            wire = AiohttpTransport(
                network, api_url=self._api.tasks_url, timeouts=self._timeouts, limits=self._limits
            )
        self._api.open(wire)
        self._downloader.open(network)
        started = asyncio.Event()
        self._runner = asyncio.get_running_loop().create_task(
            self._run_poller(started), name=f"worldrouter-async poller {self._name}"
        )
        try:
            await started.wait()
        except BaseException:  # cancelled while opening: leave nothing running behind
            await self.close()
            raise
        self.state = SessionState.OPEN

    async def close(self) -> None:
        """Stop the poller (ending pending handles), then close the pools; idempotent."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
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

    def check_open(self) -> None:
        """Refuse, before anything is sent, a session that cannot be used here and now."""
        if self.state is not SessionState.OPEN:
            raise RuntimeError(
                f"the session is {self.state}; use it inside 'async with Session(...)'"
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
