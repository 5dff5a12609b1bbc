"""The runnable examples under docs/examples, executed against the emulator."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from yarl import URL

from worldrouter_async._poll_workers import POLL_TASK_NAME
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


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on a free loopback port; the caller cleans the runner up."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def _aiohttp_app(emulator: Emulator) -> tuple[ModuleType, web.Application]:
    example = _load("aiohttp_app")
    app = example.create_app(
        api_key=emulator.api_key, base_url=emulator.base_url, poll=FAST_POLL, retry=FAST_RETRY
    )
    return example, app


async def test_aiohttp_app_shares_one_session_across_handlers(emulator: Emulator) -> None:
    """200 concurrent requests to the web app go through one Session and one poller."""
    example, app = _aiohttp_app(emulator)
    runner, port = await _serve(app)
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


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for app state that has no event to await."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


async def _next_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """Read one server-sent event and return its JSON data."""
    lines = [await response.content.readline() for _ in range(3)]
    assert lines[0] == b"event: status\n"
    assert lines[1].startswith(b"data: ")
    assert lines[2] == b"\n"
    data: dict[str, Any] = json.loads(lines[1].removeprefix(b"data: "))
    return data


async def test_aiohttp_app_streams_status_changes_as_server_sent_events(
    emulator: Emulator,
) -> None:
    """GET /events forwards every change as SSE; leaving browsers and shutdown end streams."""
    example, app = _aiohttp_app(emulator)
    runner, port = await _serve(app)
    url = f"http://127.0.0.1:{port}"
    streams = app[example.EVENT_STREAMS]
    try:
        async with aiohttp.ClientSession() as client:

            async def post(prompt: str) -> None:
                async with client.post(f"{url}/images", json={"prompt": prompt}) as answer:
                    await answer.read()

            async with client.get(f"{url}/events") as events:
                assert events.headers["Content-Type"] == "text/event-stream"
                await _until(lambda: len(streams) == 1)
                async with anyio.create_task_group() as task_group:
                    for prompt in ("a kite", "a boat", "[fail] a storm"):
                        task_group.start_soon(post, prompt)
                received = [await _next_event(events) for _ in range(3)]
                while sum(event["final"] for event in received) < 3:
                    received.append(await _next_event(events))
            finals = [event for event in received if event["final"]]
            assert sorted(event["status"] for event in finals) == ["completed"] * 2 + ["failed"]
            assert all(event["urls"] for event in finals if event["status"] == "completed")
            by_task: dict[str, list[dict[str, Any]]] = {}
            for event in received:
                by_task.setdefault(event["task_id"], []).append(event)
            for chain in by_task.values():  # each task's changes link up, final last
                assert [e["previous"] for e in chain[1:]] == [e["status"] for e in chain[:-1]]
                assert chain[-1]["final"]

            # The browser left: the next change makes its handler notice and return.
            await app[example.SESSION].generate("gpt-image-2", "after the browser left")
            await _until(lambda: not streams)

            # Shutdown ends a stream that is still open instead of waiting for it.
            async with client.get(f"{url}/events") as events:
                await _until(lambda: len(streams) == 1)
                await runner.cleanup()
                assert await events.content.read() == b""
    finally:
        await runner.cleanup()


RUNNABLE = [
    "quickstart",
    "many_tasks",
    "lifespan_app",
    "bulk_jobs",
    "track_elsewhere",
    "errors",
    "downloads",
    "model_parameters",
    "pipelines",
    "emulator",
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


@pytest.mark.parametrize(
    ("name", "tests"),
    [("test_my_app", 3), ("test_with_fake_clock", 2), ("test_my_app_in_memory", 2)],
)
async def test_docs_example_test_module_passes(name: str, tests: int) -> None:
    """The 'testing your own code' examples are themselves passing pytest modules."""
    done = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / f"{name}.py"),
        ],
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:]
    assert f"{tests} passed".encode() in done.stdout


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


async def test_observers_example_counts_answers_and_the_429_pause(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The observer example sees the 429 (its pause and retry) and the task's success."""
    monkeypatch.setenv("WORLDROUTER_API_KEY", emulator.api_key)
    monkeypatch.setenv("WORLDROUTER_BASE_URL", emulator.base_url)
    emulator.inject("429", route="create", retry_after=0.01)
    example = _load("observers")
    await example.main()
    out = capsys.readouterr().out
    assert "rate limited: every request waits 0.010s" in out
    assert "'http_429': 1" in out
    assert "'retries': 1" in out
    assert "'succeeded': 1" in out
