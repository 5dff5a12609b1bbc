"""Testing your own code with the bundled emulator and its pytest fixtures.

In your conftest.py: ``pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]``
and an ``anyio_backend`` fixture returning ``"asyncio"``.
"""

import pytest

import worldrouter_async as wr
from worldrouter_async.testing import Emulator

pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def make_thumbnail(session: wr.Session, prompt: str) -> str:
    """The code under test: your application's use of the SDK."""
    result = await session.generate("gpt-image-2", prompt, size="1024x1024")
    return result.urls[0]


@pytest.mark.anyio
async def test_make_thumbnail(worldrouter_session: wr.Session) -> None:
    url = await make_thumbnail(worldrouter_session, "a star")
    assert url.endswith(".png")


@pytest.mark.anyio
async def test_failure_path(worldrouter_session: wr.Session) -> None:
    with pytest.raises(wr.TaskFailedError):  # the [fail] marker makes the emulator fail it
        await make_thumbnail(worldrouter_session, "[fail] a star")


@pytest.mark.anyio
async def test_rate_limits(worldrouter_emulator: Emulator, worldrouter_session: wr.Session) -> None:
    worldrouter_emulator.inject("429", route="create", retry_after=0.01)
    assert await make_thumbnail(worldrouter_session, "a star")
