"""The emulator speaks the documented wire format (checked with a raw aiohttp client)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from yarl import URL

from worldrouter_async.testing import Emulator, FakeClock
from worldrouter_async.testing._emulator import (
    CREATE_PATH,
    EmulatedAPI,
    EmulatedRequest,
    EmulatedResponse,
    NoAnswer,
)
from worldrouter_async.testing._png import preview_png

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A bare aiohttp client, independent of the SDK under test."""
    async with aiohttp.ClientSession() as client:
        yield client


async def _create(
    http: aiohttp.ClientSession, emulator: Emulator, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{emulator.base_url}/images/generation_tasks", json=body, headers=AUTH
    ) as response:
        return response.status, await response.json()


async def _poll_until_done(
    http: aiohttp.ClientSession, emulator: Emulator, task_id: str
) -> dict[str, Any]:
    with anyio.fail_after(5):
        while True:
            async with http.get(
                f"{emulator.base_url}/images/generation_tasks/{task_id}", headers=AUTH
            ) as response:
                body: dict[str, Any] = await response.json()
            if body["status"] in ("completed", "failed"):
                return body
            await anyio.sleep(0.005)


async def test_documented_create_and_completed_shapes(
    http: aiohttp.ClientSession, emulator: Emulator
) -> None:
    """Create answers the documented queued body; a completed poll adds data and usage."""
    status, created = await _create(
        http,
        emulator,
        {"model": "gpt-image-2", "prompt": "a star", "n": 1, "response_format": "url"},
    )
    assert status == 200
    assert set(created) == {"id", "object", "created", "task_id", "status", "model", "created_at"}
    assert created["status"] == "queued"
    assert created["object"] == "image.generation_task"
    assert created["id"] == created["task_id"]
    done = await _poll_until_done(http, emulator, created["id"])
    assert set(done) == set(created) | {"data", "usage"}
    assert set(done["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert URL(done["data"][0]["url"]).port != URL(emulator.base_url).port


async def test_failed_task_has_an_error_object(
    http: aiohttp.ClientSession, emulator: Emulator
) -> None:
    """The [fail:code] marker fails the task with that code."""
    _, created = await _create(http, emulator, {"model": "gpt-image-2", "prompt": "[fail:nsfw] x"})
    done = await _poll_until_done(http, emulator, created["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "nsfw"
    assert "data" not in done


async def test_n_is_capped_and_gemini_decides(
    http: aiohttp.ClientSession, emulator: Emulator
) -> None:
    """gpt-image-2 caps n at the server cap; Gemini ignores size and n without error."""
    _, gpt = await _create(http, emulator, {"model": "gpt-image-2", "prompt": "x", "n": 10})
    _, gemini = await _create(
        http,
        emulator,
        {"model": "gemini-2.5-flash-image", "prompt": "x", "n": 3, "size": "bogus", "seed": 42},
    )
    assert emulator.tasks[gpt["id"]].n == emulator.n_cap
    assert emulator.tasks[gemini["id"]].n == 1
    assert "size" not in emulator.tasks[gemini["id"]].params
    assert emulator.tasks[gemini["id"]].params["seed"] == 42  # unknown parameters accepted


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"prompt": "x"}, "missing_required_parameter"),
        ({"model": "gpt-image-2"}, "missing_required_parameter"),
        ({"model": "gpt-image-2", "prompt": "x", "response_format": "b64_json"}, "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "x", "output_format": "gif"}, "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "x", "n": 0}, "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "big"}, "invalid_value"),
        ({"model": "sdxl", "prompt": "x"}, "model_not_found"),
    ],
)
async def test_validation_errors_are_openai_style_400s(
    http: aiohttp.ClientSession, emulator: Emulator, body: dict[str, Any], code: str
) -> None:
    """Bad bodies get 400 with {"error": {"message", "type", "code"}}."""
    status, answer = await _create(http, emulator, body)
    assert status == 400
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert emulator.counters.creates == 0


async def test_auth_and_not_found(http: aiohttp.ClientSession, emulator: Emulator) -> None:
    """Missing bearer is 401; an unknown task ID is 404."""
    async with http.get(f"{emulator.base_url}/images/generation_tasks/x") as response:
        assert response.status == 401
    async with http.get(f"{emulator.base_url}/images/generation_tasks/x", headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "task_not_found"


async def test_token_bucket_rate_limit() -> None:
    """Past the burst, requests get 429 with Retry-After and retry-after-ms."""
    async with Emulator(rate_limit=5.0, burst=3) as emulator, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(5):
            async with http.get(
                f"{emulator.base_url}/images/generation_tasks/x", headers=AUTH
            ) as response:
                statuses.append(response.status)
                headers = response.headers
        assert statuses == [404, 404, 404, 429, 429]
        assert int(headers["Retry-After"]) >= 1
        assert 0 < float(headers["retry-after-ms"]) <= 200
        assert emulator.counters.faults["429"] == 2


async def test_storage_records_authorization_headers(
    http: aiohttp.ClientSession, emulator: Emulator
) -> None:
    """The storage origin counts requests that (wrongly) carry credentials."""
    _, created = await _create(http, emulator, {"model": "gpt-image-2", "prompt": "x"})
    url = (await _poll_until_done(http, emulator, created["id"]))["data"][0]["url"]
    async with http.get(url) as response:
        assert response.content_type == "image/png"
    async with http.get(url, headers=AUTH):
        pass
    assert emulator.counters.storage_requests == 2
    assert emulator.counters.storage_auth_headers == 1


async def test_same_seed_same_durations() -> None:
    """Durations come from a seeded generator, so runs repeat."""
    spans = []
    for _ in range(2):
        async with Emulator(seed=7) as emulator, aiohttp.ClientSession() as http:
            _, created = await _create(http, emulator, {"model": "gpt-image-2", "prompt": "x"})
            task = emulator.tasks[created["id"]]
            spans.append(round(task.finishes_at - task.started_at, 9))
    assert spans[0] == spans[1]


async def test_slow_responses_and_random_faults_are_counted() -> None:
    """slow_rate delays answers by slow_delay; fail_rate and drop_rate inject faults."""
    clock = FakeClock()
    async with (
        Emulator(slow_rate=1.0, slow_delay=0.1, clock=clock) as emulator,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{emulator.base_url}/images/generation_tasks/x", headers=AUTH) as r:
            assert r.status == 404
        assert clock.now() == 0.1
    async with Emulator(fail_rate=1.0, seed=3) as emulator, aiohttp.ClientSession() as http:
        for _ in range(6):
            async with http.get(
                f"{emulator.base_url}/images/generation_tasks/x", headers=AUTH
            ) as r:
                assert r.status in (500, 502, 503)
        assert sum(emulator.counters.faults.values()) == 6


@pytest.mark.parametrize(("ignore", "tasks"), [(False, 1), (True, 2)])
async def test_idempotency_key_honoured_or_ignored(
    http: aiohttp.ClientSession, ignore: bool, tasks: int
) -> None:
    """A resent key replays the task, unless the emulator plays a server that ignores it."""
    async with Emulator(ignore_idempotency=ignore) as emulator:
        ids = set()
        for _ in range(2):
            async with http.post(
                f"{emulator.base_url}/images/generation_tasks",
                json={"model": "gpt-image-2", "prompt": "a star"},
                headers={**AUTH, "Idempotency-Key": "k1"},
            ) as response:
                ids.add((await response.json())["id"])
    assert len(ids) == tasks
    assert emulator.counters.creates == tasks
    assert emulator.counters.duplicate_creates == tasks - 1
    assert emulator.counters.idempotent_replays == 2 - tasks


async def test_a_refuse_outage_refuses_connections_until_it_ends(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """'refuse' closes the port, so nothing can even be sent; then the API serves again."""
    body = {"model": "gpt-image-2", "prompt": "a"}
    await emulator.outage("refuse", seconds=0.05)
    with pytest.raises(aiohttp.ClientConnectorError):
        await _create(http, emulator, body)
    with anyio.fail_after(5):
        while True:
            try:
                status, _ = await _create(http, emulator, body)
                break
            except aiohttp.ClientConnectorError:
                await anyio.sleep(0.01)
    assert status == 200
    assert emulator.counters.outages == 1
    assert emulator.counters.creates == 1


@pytest.mark.parametrize("kind", ["502", "503", "504"])
async def test_a_gateway_outage_answers_every_request_and_creates_nothing(
    emulator: Emulator, http: aiohttp.ClientSession, kind: str
) -> None:
    """A gateway outage answers creates and polls with its status; no task is made."""
    await emulator.outage(kind, seconds=3600)  # type: ignore[arg-type]
    create = http.post(f"{emulator.base_url}/images/generation_tasks", json={}, headers=AUTH)
    async with create as created:
        assert created.status == int(kind)
    async with http.get(f"{emulator.base_url}/images/generation_tasks/x", headers=AUTH) as got:
        assert got.status == int(kind)
    assert emulator.counters.outage_answers == 2
    assert emulator.counters.create_requests == 0


async def test_keepalive_timeout_closes_connections_idle_after_an_answer(
    http: aiohttp.ClientSession,
) -> None:
    """Back-to-back requests share a connection; after an idle gap the server has closed it."""
    async with Emulator(keepalive_timeout=0.05) as emulator:
        url = f"{emulator.base_url}/images/generation_tasks/x"
        for _ in range(2):
            async with http.get(url, headers=AUTH) as response:
                await response.read()
        assert emulator.counters.connections == 1
        await anyio.sleep(0.1)
        async with http.get(url, headers=AUTH) as response:
            await response.read()
        assert emulator.counters.connections == 2


async def test_stopping_over_https_closes_a_connection_whose_peer_never_answers_close_notify(
    server_tls: ssl.SSLContext, ca_bundle: Path
) -> None:
    """A busy proxy may not answer the server's TLS close for seconds; stop() closes the
    socket anyway instead of leaving it to the garbage collector."""
    client = ssl.create_default_context(cafile=str(ca_bundle))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    loop = asyncio.get_running_loop()
    with socket.socket() as raw, anyio.fail_after(10):
        raw.setblocking(False)
        async with Emulator(ssl=server_tls) as emulator:
            url = URL(emulator.base_url)
            await loop.sock_connect(raw, (url.host, url.port))

            async def flush() -> None:
                await loop.sock_sendall(raw, outgoing.read())

            while True:  # TLS by hand, so nothing answers the server's close_notify later
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await flush()
                    incoming.write(await loop.sock_recv(raw, 65536))
            await flush()
            tls.write(
                f"GET /v1/images/generation_tasks/x HTTP/1.1\r\nHost: {url.host}\r\n"
                f"Authorization: Bearer {emulator.api_key}\r\n\r\n".encode()
            )
            await flush()
            answer = b""
            while b"\r\n\r\n" not in answer:
                incoming.write(await loop.sock_recv(raw, 65536))
                try:
                    answer += tls.read()
                except ssl.SSLWantReadError:
                    continue
            assert answer.startswith(b"HTTP/1.1 404")
        # The server sent close_notify and nothing answered: it must still close the TCP
        # connection, so the socket reads to its end.
        while await loop.sock_recv(raw, 65536):
            pass


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB PNG with unfiltered rows."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    position, idat, size = 8, b"", (0, 0)
    while position < len(png):
        length = int.from_bytes(png[position : position + 4])
        kind, data = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            size = (int.from_bytes(data[:4]), int.from_bytes(data[4:8]))
            assert data[8:10] == b"\x08\x02"  # 8-bit RGB
        elif kind == b"IDAT":
            idat += data
        position += 12 + length
    width, height = size
    raw = zlib.decompress(idat)
    stride = 3 * width + 1
    assert len(raw) == stride * height
    assert all(raw[y * stride] == 0 for y in range(height))
    return width, height, [raw[y * stride + 1 : (y + 1) * stride] for y in range(height)]


async def _image(
    http: aiohttp.ClientSession, emulator: Emulator, body: dict[str, Any], index: int = 0
) -> bytes:
    _, created = await _create(http, emulator, body)
    url = (await _poll_until_done(http, emulator, created["id"]))["data"][index]["url"]
    async with http.get(url) as response:
        assert response.content_type == "image/png"
        return await response.read()


async def test_images_are_pictures_of_the_prompt_marked_emulator(
    http: aiohttp.ClientSession, emulator: Emulator
) -> None:
    """An image is a many-coloured picture fixed by the prompt, with a white EMULATOR label
    on a dark band at the bottom; another prompt gives another picture."""
    body = {"model": "gpt-image-2", "prompt": "a fox in snow"}
    first = await _image(http, emulator, body)
    assert first == await _image(http, emulator, body)  # another task, the same picture
    other = await _image(http, emulator, {**body, "prompt": "a tram in the rain"})
    width, height, rows = _pixels(first)
    assert (width, height) == (256, 256)
    colours = {row[x : x + 3] for row in rows for x in range(0, len(row), 3)}
    assert len(colours) > 50  # a gradient and a pattern, not one flat colour
    white = b"\xff\xff\xff"
    label_rows = [
        y for y, row in enumerate(rows) if white in {row[x : x + 3] for x in range(0, len(row), 3)}
    ]
    assert label_rows
    assert min(label_rows) > height * 3 // 4  # text only in the bottom band
    _, _, other_rows = _pixels(other)
    differing = sum(a != b for a, b in zip(rows[:200], other_rows[:200], strict=True))
    assert differing > 150  # visibly different above the shared label


async def test_images_follow_the_requested_size_up_to_the_cap(
    http: aiohttp.ClientSession, emulator: Emulator
) -> None:
    """A 1024x1536 request gets a 171x256 picture; a tiny size is served as asked; each
    image of one task differs."""
    body = {"model": "gpt-image-2", "prompt": "a kite", "size": "1024x1536", "n": 2}
    _, created = await _create(http, emulator, body)
    done = await _poll_until_done(http, emulator, created["id"])
    images = []
    for item in done["data"]:
        async with http.get(item["url"]) as response:
            images.append(await response.read())
    assert [_pixels(image)[:2] for image in images] == [(171, 256), (171, 256)]
    assert images[0] != images[1]
    tiny = await _image(http, emulator, {**body, "size": "8x4", "n": 1})
    assert _pixels(tiny)[:2] == (8, 4)


@pytest.mark.parametrize("size", [(1, 1), (1, 256), (256, 1), (7, 3), (47, 30), (255, 256)])
def test_pictures_of_any_size_are_valid_pngs(size: tuple[int, int]) -> None:
    """Every width and height from 1 pixel up gives a PNG of exactly that size."""
    width, height = size
    assert _pixels(preview_png(f"{width}x{height}", width, height))[:2] == size


async def _send(api: EmulatedAPI, method: str, path: str, body: Any = None) -> EmulatedResponse:
    """One request to the API origin of `api`, in memory."""
    encoded = b"" if body is None else json.dumps(body).encode()
    return await api.handle(
        EmulatedRequest(method, path, {"authorization": AUTH["Authorization"]}, encoded)
    )


async def test_the_api_runs_create_poll_and_download_without_a_server() -> None:
    """EmulatedAPI answers a create, the polls that follow its timeline on the clock, and the
    image download, with no socket anywhere; every API answer carries an x-request-id."""
    clock = FakeClock()
    api = EmulatedAPI(clock=clock)
    api.storage_url = "http://storage.test"
    created = await _send(api, "POST", CREATE_PATH, {"model": "gpt-image-2", "prompt": "a fox"})
    assert (created.status, created.json()["status"]) == (200, "queued")
    assert created.header("Content-Type") == "application/json; charset=utf-8"
    assert (created.header("X-Request-Id") or "").startswith("req_")
    task_id = created.json()["id"]
    poll = f"{CREATE_PATH}/{task_id}"
    assert (await _send(api, "GET", poll)).json()["status"] == "queued"
    clock.advance(api.completed_at(task_id))
    done = (await _send(api, "GET", poll)).json()
    assert done["status"] == "completed"
    assert api.counters.polls_by_task[task_id] == 2
    url = URL(done["data"][0]["url"])
    assert url.origin() == URL(api.storage_url)
    image = await api.handle_storage(EmulatedRequest("GET", url.path, {}, query=url.query))
    assert (image.status, image.header("content-type")) == (200, "image/png")
    assert _pixels(image.body)[:2] == (256, 256)
    api.expire_urls()
    expired = await api.handle_storage(EmulatedRequest("GET", url.path, query=url.query))
    assert (expired.status, expired.body) == (403, b"Request has expired")


async def test_the_api_plays_faults_and_outages_as_answers_or_no_answer() -> None:
    """A dropped create still makes its task but answers nothing (NoAnswer); a 429 carries
    Retry-After; a gateway outage answers 503 without creating; a wrong key is 401."""
    api = EmulatedAPI(clock=FakeClock())
    body = {"model": "gpt-image-2", "prompt": "a kite"}
    api.inject("drop_after_create", route="create")
    with pytest.raises(NoAnswer):
        await _send(api, "POST", CREATE_PATH, body)
    assert api.counters.creates == 1
    api.inject("429", route="poll", retry_after=2.5)
    limited = await _send(api, "GET", f"{CREATE_PATH}/{next(iter(api.tasks))}")
    assert (limited.status, limited.header("Retry-After")) == (429, "3")
    wrong = await api.handle(EmulatedRequest("GET", f"{CREATE_PATH}/x", {"Authorization": "x"}))
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    await api.outage("503", seconds=60)
    assert (await _send(api, "POST", CREATE_PATH, body)).status == 503
    assert api.counters.create_requests == 1
    await api.release()
