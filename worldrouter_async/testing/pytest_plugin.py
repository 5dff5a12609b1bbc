"""Pytest fixtures: an emulator and a fast Session wired to it, for anyio or pytest-asyncio tests.

Enable with ``pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]``. The fixtures
run on the event loop of whichever plugin runs the test: the anyio plugin
(``@pytest.mark.anyio`` and an ``anyio_backend`` fixture returning ``"asyncio"``) or
pytest-asyncio in strict (``@pytest.mark.asyncio``) or auto mode, with the default
function-scoped loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from .._config import is_testing, set_testing
from .._session import Session
from . import FAST_POLL, FAST_RETRY
from ._emulator import Emulator


def _emulator_fixture() -> Callable[[], AsyncIterator[Emulator]]:
    """A fresh fixture function (each test plugin marks its own) running an emulator."""

    async def running_emulator() -> AsyncIterator[Emulator]:
        async with Emulator() as emulator:
            yield emulator

    return running_emulator


def _session_fixture() -> Callable[[Emulator], AsyncIterator[Session]]:
    """A fresh fixture function (each test plugin marks its own) opening a fast session."""

    async def open_session(worldrouter_emulator: Emulator) -> AsyncIterator[Session]:
        async with Session(
            worldrouter_emulator.api_key,
            worldrouter_emulator.base_url,
            poll=FAST_POLL,
            retry=FAST_RETRY,
        ) as session:
            yield session

    return open_session


# The anyio plugin runs an async fixture on its own loop when the test uses `anyio_backend`.
_worldrouter_emulator_anyio = pytest.fixture(name="_worldrouter_emulator_anyio")(
    _emulator_fixture()
)
_worldrouter_session_anyio = pytest.fixture(name="_worldrouter_session_anyio")(_session_fixture())

try:
    import pytest_asyncio
except ImportError:  # pytest-asyncio is optional: without it, only anyio tests run
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True
    # Marked for pytest-asyncio, so strict mode runs them too, on the test's function loop.
    _worldrouter_emulator_asyncio = pytest_asyncio.fixture(
        name="_worldrouter_emulator_asyncio", loop_scope="function"
    )(_emulator_fixture())
    _worldrouter_session_asyncio = pytest_asyncio.fixture(
        name="_worldrouter_session_asyncio", loop_scope="function"
    )(_session_fixture())


def _on_test_loop(request: pytest.FixtureRequest, name: str) -> Any:
    """The value of fixture `name` set up by the plugin that runs this test, on its loop."""
    # A test that uses `anyio_backend` runs on anyio's loop even under pytest-asyncio auto mode.
    if "anyio_backend" in request.fixturenames:
        return request.getfixturevalue(f"_{name}_anyio")
    if _HAVE_PYTEST_ASYNCIO and pytest_asyncio.is_async_test(request.node):
        return request.getfixturevalue(f"_{name}_asyncio")
    pytest.fail(
        f"{name} needs an async test run by an async test plugin: mark the test with "
        "@pytest.mark.anyio (and define an anyio_backend fixture returning 'asyncio'), "
        "or install pytest-asyncio and mark it with @pytest.mark.asyncio (or set "
        "asyncio_mode = auto).",
        pytrace=False,
    )


@pytest.fixture
def worldrouter_emulator(request: pytest.FixtureRequest) -> Emulator:
    """A running emulator with the default 1/1000 time scale and a fixed seed."""
    emulator: Emulator = _on_test_loop(request, "worldrouter_emulator")
    return emulator


@pytest.fixture
def worldrouter_session(request: pytest.FixtureRequest) -> Session:
    """An open Session against `worldrouter_emulator`, with millisecond polls and retries."""
    session: Session = _on_test_loop(request, "worldrouter_session")
    return session


@pytest.fixture
def worldrouter_testing() -> Iterator[None]:
    """Sessions opened during the test use millisecond polls and retries."""
    previous = is_testing()
    set_testing(True)
    try:
        yield
    finally:
        set_testing(previous)
