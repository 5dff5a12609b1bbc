"""The same fixtures under pytest-asyncio, in strict or auto mode.

In your conftest.py: ``pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]``;
no ``anyio_backend`` fixture is needed.
"""

import pytest

import worldrouter_async as wr
from worldrouter_async.testing import Emulator

pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]

pytestmark = pytest.mark.asyncio  # optional in auto mode


async def test_generate(worldrouter_session: wr.Session) -> None:
    result = await worldrouter_session.generate("gpt-image-2", "a star")
    assert result.urls[0].endswith(".png")


async def test_server_errors_are_retried(
    worldrouter_emulator: Emulator, worldrouter_session: wr.Session
) -> None:
    worldrouter_emulator.inject("503", route="create", count=2)
    await worldrouter_session.generate("gpt-image-2", "a star")
    assert worldrouter_emulator.counters.faults["503"] == 2
