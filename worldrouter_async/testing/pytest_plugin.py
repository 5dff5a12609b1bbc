"""Pytest fixtures: an emulator and a fast Session wired to it, for anyio tests.

Enable with ``pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from .._config import is_testing, set_testing
from .._session import Session
from . import FAST_POLL, FAST_RETRY
from ._emulator import Emulator


@pytest.fixture
async def worldrouter_emulator(anyio_backend: str) -> AsyncIterator[Emulator]:
    """A running emulator with the default 1/1000 time scale and a fixed seed."""
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def worldrouter_session(worldrouter_emulator: Emulator) -> AsyncIterator[Session]:
    """An open Session against `worldrouter_emulator`, with millisecond polls and retries."""
    async with Session(
        worldrouter_emulator.api_key,
        worldrouter_emulator.base_url,
        poll=FAST_POLL,
        retry=FAST_RETRY,
    ) as session:
        yield session


@pytest.fixture
def worldrouter_testing() -> Iterator[None]:
    """Sessions opened during the test use millisecond polls and retries."""
    previous = is_testing()
    set_testing(True)
    try:
        yield
    finally:
        set_testing(previous)
