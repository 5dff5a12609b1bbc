"""Shared fixtures: the bundled emulator plugin, the asyncio backend and session factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from worldrouter_async import Session
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator

pytest_plugins = ["pytester", "worldrouter_async.testing.pytest_plugin"]

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


@pytest.fixture
def make_session(emulator: Emulator) -> SessionFactory:
    """Open extra sessions against `emulator` with custom options (fast policies by default)."""

    @asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[Session]:
        options.setdefault("poll", FAST_POLL)
        options.setdefault("retry", FAST_RETRY)
        async with Session(emulator.api_key, emulator.base_url, **options) as opened:
            yield opened

    return factory
