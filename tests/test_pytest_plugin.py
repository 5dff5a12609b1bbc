"""The bundled pytest fixtures, run in real pytest processes under each async test plugin."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"

pytestmark = pytest.mark.slow
needs_pytest_asyncio = pytest.mark.skipif(
    find_spec("pytest_asyncio") is None, reason="pytest-asyncio (the test extra) is not installed"
)


def _run(pytester: pytest.Pytester, example: str, *ini_lines: str) -> pytest.RunResult:
    """Run a docs example test module in a fresh pytest process with its own configuration."""
    pytester.makeini("\n".join(["[pytest]", *ini_lines]))
    pytester.makepyfile(**{example: (EXAMPLES / f"{example}.py").read_text()})
    return pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")


@needs_pytest_asyncio
@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_fixtures_run_on_the_pytest_asyncio_loop(pytester: pytest.Pytester, mode: str) -> None:
    """Under pytest-asyncio, in strict and auto mode, the fixtures share the test's loop."""
    result = _run(
        pytester,
        "test_my_app_asyncio",
        f"asyncio_mode = {mode}",
        "asyncio_default_fixture_loop_scope = function",
    )
    result.assert_outcomes(passed=2)


@needs_pytest_asyncio
def test_fixtures_run_on_the_anyio_loop_beside_pytest_asyncio(pytester: pytest.Pytester) -> None:
    """Anyio tests get the fixtures on anyio's loop while pytest-asyncio is loaded too."""
    result = _run(
        pytester,
        "test_my_app",
        "asyncio_mode = strict",
        "asyncio_default_fixture_loop_scope = function",
    )
    result.assert_outcomes(passed=3)
    assert "asyncio: mode=Mode.STRICT" in result.stdout.str()


def test_fixtures_run_on_the_anyio_loop_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    """Anyio tests get the fixtures with pytest-asyncio disabled, as without it installed."""
    result = _run(pytester, "test_my_app", "addopts = -p no:asyncio")
    result.assert_outcomes(passed=3)


def test_a_sync_test_is_told_how_to_run_the_fixtures(pytester: pytest.Pytester) -> None:
    """A test no async plugin runs gets one line naming both plugins, not a coroutine."""
    pytester.makeconftest('pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]')
    pytester.makepyfile("def test_sync(worldrouter_session):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*worldrouter_session needs an async test*@pytest.mark.anyio*"])
