"""The runnable examples under docs/examples, executed against the emulator."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import anyio
import pytest
from aiohttp import web
from yarl import URL

from worldrouter_async._poller import POLL_TASK_NAME
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator

from .conftest import ForwardProxy

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"

pytestmark = pytest.mark.anyio


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_aiohttp_app_shares_one_session_across_handlers(emulator: Emulator) -> None:
    """200 concurrent requests to the web app go through one Session and one poller."""
    example = _load("aiohttp_app")
    app = example.create_app(
        api_key=emulator.api_key, base_url=emulator.base_url, poll=FAST_POLL, retry=FAST_RETRY
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    answers: list[tuple[int, dict[str, object]]] = []

    async def call(client: aiohttp.ClientSession, prompt: str) -> None:
        async with client.post(f"http://127.0.0.1:{port}/images", json={"prompt": prompt}) as r:
            answers.append((r.status, await r.json()))

    try:
        async with aiohttp.ClientSession() as client:
            async with anyio.create_task_group() as task_group:
                for i in range(200):
                    task_group.start_soon(call, client, f"image {i}")
                task_group.start_soon(call, client, "[fail] broken")
                task_group.start_soon(call, client, "")
            session = app[example.SESSION]
            assert session.stats.creates == 201
            async with client.get(
                f"http://127.0.0.1:{port}/images/{answers[0][1]['task_id']}"
            ) as r:
                assert (await r.json())["status"] in ("completed", "failed")
    finally:
        await runner.cleanup()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 200 + [400, 422]
    assert all(
        str(body["urls"][0]).startswith(emulator.storage_url)  # type: ignore[index]
        for status, body in answers
        if status == 200
    )
    # The session closed with the app: its poller and polls are gone.
    assert not [t for t in asyncio.all_tasks() if t.get_name() == POLL_TASK_NAME]


RUNNABLE = [
    "quickstart",
    "many_tasks",
    "lifespan_app",
    "bulk_jobs",
    "track_elsewhere",
    "errors",
    "downloads",
    "model_parameters",
]


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.usefixtures("worldrouter_testing")
async def test_docs_example_runs(
    name: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each docs example runs to the end against the emulator, as a user would run it."""
    monkeypatch.setenv("WORLDROUTER_API_KEY", emulator.api_key)
    monkeypatch.setenv("WORLDROUTER_BASE_URL", emulator.base_url)
    monkeypatch.chdir(tmp_path)
    await _load(name).main()
    assert capsys.readouterr().out
    assert emulator.counters.storage_auth_headers == 0


async def test_docs_example_test_module_passes() -> None:
    """The 'testing your own code' example is itself a passing pytest module."""
    done = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_my_app.py"),
        ],
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:]
    assert b"3 passed" in done.stdout


@pytest.mark.usefixtures("worldrouter_testing")
async def test_networks_example_through_a_proxy_with_a_private_ca(
    https_emulator: Emulator,
    forward_proxy: ForwardProxy,
    ca_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The networks example reaches an https API and its storage through a proxy, trusting a CA."""
    monkeypatch.setenv("WORLDROUTER_API_KEY", https_emulator.api_key)
    monkeypatch.setenv("WORLDROUTER_BASE_URL", https_emulator.base_url)
    monkeypatch.chdir(tmp_path)
    example = _load("networks")
    await example.main()
    assert "untrusted certificate" in capsys.readouterr().out
    monkeypatch.setenv("CORP_PROXY", forward_proxy.url)
    monkeypatch.setenv("CORP_CA_BUNDLE", str(ca_bundle))
    await example.main()
    assert ".png" in capsys.readouterr().out
    assert await forward_proxy.wait_for_tunnel(URL(https_emulator.storage_url).port or 0) >= 1


async def test_logging_example_prints_one_line_per_request(emulator: Emulator) -> None:
    """The logging example, run as a program, logs each request at DEBUG to stderr."""
    env = {
        **os.environ,
        "WORLDROUTER_API_KEY": emulator.api_key,
        "WORLDROUTER_BASE_URL": emulator.base_url,
    }
    done = await anyio.run_process(
        [sys.executable, str(EXAMPLES / "logging_setup.py")], env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert b"DEBUG worldrouter_async: POST /v1/images/generation_tasks -> 200 in " in done.stderr
    assert b"DEBUG worldrouter_async: GET /v1/images/generation_tasks/imgtask_" in done.stderr
    assert emulator.api_key.encode() not in done.stderr
