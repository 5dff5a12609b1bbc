"""Shared fixtures: the bundled emulator plugin, the asyncio backend and session factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from worldrouter_async import Session
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator, FakeClock

pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]

SessionFactory = Callable[..., AbstractAsyncContextManager[Session]]


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only, so every async test runs on asyncio."""
    return "asyncio"


@pytest.fixture
def emulator(worldrouter_emulator: Emulator) -> Emulator:
    """The running emulator, under a short name."""
    return worldrouter_emulator


@pytest.fixture
def session(worldrouter_session: Session) -> Session:
    """An open fast session against `emulator`, under a short name."""
    return worldrouter_session


def _session_factory(emulator: Emulator, **defaults: Any) -> SessionFactory:
    @asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[Session]:
        options = {"poll": FAST_POLL, "retry": FAST_RETRY, **defaults, **options}
        async with Session(emulator.api_key, emulator.base_url, **options) as opened:
            yield opened

    return factory


@pytest.fixture
def make_session(emulator: Emulator) -> SessionFactory:
    """Open extra sessions against `emulator` with custom options (fast policies by default)."""
    return _session_factory(emulator)


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time that jumps to the next timer whenever the event loop is idle."""
    return FakeClock()


@pytest.fixture
async def clocked_emulator(clock: FakeClock, anyio_backend: str) -> AsyncIterator[Emulator]:
    """An emulator whose tasks, faults and request log run on `clock`."""
    async with Emulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def make_clocked_session(clocked_emulator: Emulator, clock: FakeClock) -> SessionFactory:
    """Open sessions against `clocked_emulator` that poll, retry and time out on `clock`."""
    return _session_factory(clocked_emulator, clock=clock)
