"""The transport over real loopback HTTP: auth, error mapping, retries and hostile answers."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest

from worldrouter_async import (
    AmbiguousCreateError,
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InvalidRequestError,
    Limits,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Session,
    TaskNotFoundError,
    Timeouts,
)
from worldrouter_async._answers import parse_retry_after
from worldrouter_async._retries import is_transient
from worldrouter_async.testing import FAST_RETRY, Emulator, FakeClock

from .conftest import SessionFactory
from .hostile import BOMB_INFLATED, HostileServer, gzip_bomb

pytestmark = pytest.mark.anyio

SECRET = "sk-very-secret-test-key"


async def test_create_answers_queued_and_retrieve_tracks(session: Session) -> None:
    """The low-level endpoints return typed tasks."""
    task = await session.tasks.create("gpt-image-2", "a star", n=1, size="1024x1024")
    assert task.status == "queued"
    assert task.object == "image.generation_task"
    assert task.id == task.task_id
    again = await session.tasks.retrieve(task.id)
    assert again.id == task.id


async def test_wrong_key_is_an_authentication_error(emulator: Emulator) -> None:
    """401 maps to AuthenticationError with the server's message and code."""
    async with Session("wrong-key", emulator.base_url) as session:
        with pytest.raises(AuthenticationError, match="Incorrect API key") as caught:
            await session.tasks.create("gpt-image-2", "a star")
    assert caught.value.status == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id


async def test_server_validation_error_is_a_bad_request(session: Session) -> None:
    """An unknown model passes our checks (deployments differ) and the server's 400 surfaces."""
    with pytest.raises(BadRequestError, match="not an async image model") as caught:
        await session.tasks.create("dall-e-9", "a star")
    assert caught.value.code == "model_not_found"


async def test_unknown_task_is_task_not_found(session: Session) -> None:
    """A 404 on retrieve names the task."""
    with pytest.raises(TaskNotFoundError, match="imgtask_nope") as caught:
        await session.tasks.retrieve("imgtask_nope")
    assert caught.value.task_id == "imgtask_nope"


async def test_get_retries_through_5xx_and_drops(session: Session, emulator: Emulator) -> None:
    """Transient GET failures are retried and the answer still arrives."""
    task = await session.tasks.create("gpt-image-2", "a star")
    emulator.inject("502_html", route="poll")
    emulator.inject("drop", route="poll")
    emulator.inject("bad_json", route="poll")
    assert (await session.tasks.retrieve(task.id)).id == task.id
    assert sum(emulator.counters.faults.values()) == 3
    # aiohttp itself re-sends a GET once when a reused keep-alive connection drops.
    assert session.stats.retries in (2, 3)


async def test_retrieve_retries_wait_on_the_session_clock(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """A retried retrieve sleeps on the session's clock, so virtual time covers the backoff."""
    async with make_clocked_session(retry=RetryPolicy(base=10.0, jitter=False)) as session:
        task = await session.tasks.create("gpt-image-2", "a star")
        clocked_emulator.inject("500", route="poll")
        started = clock.now()
        assert (await session.tasks.retrieve(task.id)).id == task.id
        assert clock.now() == started + 10.0


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("502_html", ServerError, "HTTP 502 Bad Gateway with a non-JSON body: '<html>"),
        ("empty_200", APIResponseError, "HTTP 200 with an empty body"),
        ("bad_json", APIResponseError, "HTTP 200 with a body that is not JSON"),
    ],
)
async def test_hostile_answers_are_typed_errors(
    make_session: SessionFactory, emulator: Emulator, kind: str, text: str, error: type[Exception]
) -> None:
    """HTML error pages, empty and malformed bodies raise errors that name the status."""
    async with make_session(retry=RetryPolicy(attempts=1)) as session:
        task = await session.tasks.create("gpt-image-2", "a star")
        emulator.inject(kind, route="poll")  # type: ignore[arg-type]
        with pytest.raises(error, match=None) as caught:
            await session.tasks.retrieve(task.id)
    assert text in str(caught.value)


async def test_silent_server_trips_the_request_deadline(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """A server that never answers raises APITimeoutError (also a TimeoutError)."""
    timeouts = Timeouts(request=0.2)
    async with make_session(timeouts=timeouts, retry=RetryPolicy(attempts=1)) as session:
        emulator.inject("hang", route="poll")
        with pytest.raises(APITimeoutError, match=r"within its 0\.2s deadline") as caught:
            await session.tasks.retrieve("imgtask_x")
    assert isinstance(caught.value, TimeoutError)


async def test_create_retries_429_and_503_with_one_idempotency_key(
    session: Session, emulator: Emulator
) -> None:
    """429 and 503 mean nothing was created, so the create is retried, once created in all."""
    emulator.inject("429", route="create", retry_after=0.01)
    emulator.inject("503", route="create")
    task = await session.tasks.create("gpt-image-2", "a star")
    assert emulator.counters.creates == 1
    assert emulator.counters.create_requests == 1  # 429/503 answered before the handler
    assert task.id in emulator.tasks
    assert session.stats.retries == 2
    keys = emulator.idempotency_keys
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert keys[0]


async def test_each_logical_create_gets_its_own_key(session: Session, emulator: Emulator) -> None:
    """Two creates carry two different generated keys; a caller's key is sent verbatim."""
    await session.tasks.create("gpt-image-2", "a")
    await session.tasks.create("gpt-image-2", "a")
    await session.tasks.create("gpt-image-2", "a", idempotency_key="mine-1")
    first, second, mine = emulator.idempotency_keys
    assert first != second
    assert mine == "mine-1"


@pytest.mark.parametrize("kind", ["500", "drop_after_create", "500_after_create"])
async def test_create_that_may_have_landed_is_ambiguous_not_retried(
    session: Session, emulator: Emulator, kind: str
) -> None:
    """500s and dropped answers are not retried: the error carries the idempotency key."""
    emulator.inject(kind, route="create")  # type: ignore[arg-type]
    with pytest.raises(AmbiguousCreateError, match="idempotency_key='key-1'") as caught:
        await session.tasks.create("gpt-image-2", "a star", idempotency_key="key-1")
    assert caught.value.idempotency_key == "key-1"
    sent = emulator.counters.create_requests
    assert sent == (0 if kind == "500" else 1)
    # Retrying with the same key never creates a second task.
    task = await session.tasks.create("gpt-image-2", "a star", idempotency_key="key-1")
    assert emulator.counters.creates == 1
    assert task.id in emulator.tasks


async def test_refused_connection_is_retried_then_raised() -> None:
    """Connecting to a closed port never sent anything; it is retried, then surfaces."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Session("k", f"http://127.0.0.1:{port}/v1", retry=FAST_RETRY) as session:
        with pytest.raises(APIConnectionError, match="could not connect") as caught:
            await session.tasks.create("gpt-image-2", "a star")
    assert caught.value.request_sent is False
    assert session.stats.retries == FAST_RETRY.attempts - 1


async def test_retry_after_beyond_the_maximum_raises_at_once(
    session: Session, emulator: Emulator
) -> None:
    """A Retry-After of hours is refused rather than slept on."""
    emulator.inject("429", route="poll", retry_after=3 * 3600)
    with pytest.raises(RateLimitError) as caught:
        await session.tasks.retrieve("imgtask_x")
    assert caught.value.retry_after == pytest.approx(3 * 3600)
    assert session.stats.retries == 0
    assert session.stats.rate_limit_pauses == 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "1"}, 0.25),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, milliseconds and HTTP dates are read; garbage falls back to backoff."""
    assert parse_retry_after(headers) == expected


def test_infinite_retry_after_is_kept_for_refusal() -> None:
    """'inf' is returned as infinity so the caller refuses it instead of sleeping forever."""
    assert parse_retry_after({"Retry-After": "inf"}) == math.inf


async def test_api_key_never_leaks(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    """The key is absent from reprs, errors (with their causes) and log records."""
    caplog.set_level(logging.DEBUG)
    async with Session(SECRET, emulator.base_url, retry=FAST_RETRY) as session:
        emulator.inject("503", route="poll")
        emulator.inject("drop", route="poll")
        errors: list[BaseException] = []
        for call in (session.tasks.retrieve("imgtask_x"), session.tasks.create("dall-e", "p")):
            try:
                await call
            except Exception as exc:
                errors.append(exc)
        texts = [repr(session), str(session), repr(session._api)]
        for error in errors:
            while error is not None:
                texts += [repr(error), str(error)]
                error = error.__cause__ or error.__context__  # type: ignore[assignment]
    texts += [record.getMessage() for record in caplog.records]
    assert len(errors) == 2
    assert not [text for text in texts if SECRET in text]


async def test_authorization_goes_only_to_the_api(session: Session, emulator: Emulator) -> None:
    """The emulator checks the bearer on the API; storage saw no Authorization header."""
    result = await session.generate("gpt-image-2", "a star")
    assert result.urls[0].startswith(emulator.storage_url)
    assert emulator.counters.storage_auth_headers == 0


async def test_sustained_429s_outlast_the_attempt_budget(
    session: Session, emulator: Emulator
) -> None:
    """A create keeps retrying 429s past `attempts` (nothing was created), then succeeds."""
    emulator.inject("429", route="create", retry_after=0.001, count=FAST_RETRY.attempts + 3)
    task = await session.tasks.create("gpt-image-2", "a star")
    assert task.id in emulator.tasks
    assert emulator.counters.creates == 1


async def test_429_patience_runs_out(make_session: SessionFactory, emulator: Emulator) -> None:
    """With no patience left, a 429 beyond the attempt budget is raised."""
    policy = RetryPolicy(attempts=2, base=0.001, rate_limit_patience=0.0)
    async with make_session(retry=policy) as session:
        emulator.inject("429", route="create", retry_after=0.001, count=5)
        with pytest.raises(RateLimitError):
            await session.tasks.create("gpt-image-2", "a star")
    assert emulator.counters.rate_limited == 2


async def _retrieve_from(server: HostileServer, task_id: str, **options: Any) -> None:
    async with Session("k", server.base_url, retry=RetryPolicy(attempts=1), **options) as session:
        await session.tasks.retrieve(task_id)


async def test_trickling_answer_fails_at_the_request_deadline(hostile: HostileServer) -> None:
    """A body trickling a byte every 50 ms fails at Timeouts.request, however long it goes."""
    with pytest.raises(APITimeoutError, match=r"0\.3s deadline") as caught:
        await _retrieve_from(hostile, "trickle", timeouts=Timeouts(request=0.3))
    assert isinstance(caught.value, TimeoutError)
    assert is_transient(caught.value)


async def test_endless_answer_stops_at_the_size_cap(hostile: HostileServer) -> None:
    """A body that never ends fails once it passes Limits.max_response_bytes."""
    with pytest.raises(APIResponseError, match="max_response_bytes=1048576"):
        await _retrieve_from(hostile, "endless", limits=Limits(max_response_bytes=1 << 20))


async def test_gzip_bomb_fails_with_bounded_memory(hostile: HostileServer) -> None:
    """A 250 KiB gzip answer inflating to 256 MiB fails at the cap; memory stays far below."""
    gzip_bomb()  # built before tracing: only the client is measured
    tracemalloc.start()
    try:
        with pytest.raises(APIResponseError, match="after decompression"):
            await _retrieve_from(hostile, "bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024 < BOMB_INFLATED


@pytest.mark.parametrize(
    ("task_id", "error", "text"),
    [
        ("html", APIResponseError, "HTTP 200 with a body that is not JSON: '<html>"),
        ("html502", ServerError, "HTTP 502 Bad Gateway with a non-JSON body"),
    ],
)
async def test_html_answers_are_typed_errors(
    hostile: HostileServer, task_id: str, error: type[Exception], text: str
) -> None:
    """A captive portal's 200 page and a proxy's 502 page say what came back."""
    with pytest.raises(error) as caught:
        await _retrieve_from(hostile, task_id)
    assert text in str(caught.value)


@pytest.mark.parametrize("task_id", [".", "..", "", " "])
async def test_ids_no_poll_can_name_are_refused_before_any_request(
    hostile: HostileServer, task_id: str
) -> None:
    """'.', '..' (a poll would ask another URL) and blank ids are InvalidRequestError for
    retrieve and track; no I/O."""
    async with Session("k", hostile.base_url) as session:
        with pytest.raises(InvalidRequestError, match=r"not a task id|non-empty"):
            await session.tasks.retrieve(task_id)
        with pytest.raises(InvalidRequestError, match=r"not a task id|non-empty"):
            session.track(task_id)
    assert hostile.paths == []


@pytest.mark.parametrize(
    ("task_id", "sent"), [("a/b", "a%2Fb"), ("../images", "..%2Fimages"), ("/", "%2F")]
)
async def test_ids_with_a_slash_go_out_as_one_encoded_segment(
    hostile: HostileServer, task_id: str, sent: str
) -> None:
    """A server may hand out ids with '/': each is polled as one segment, '/' as %2F."""
    with pytest.raises(TaskNotFoundError) as caught:
        await _retrieve_from(hostile, task_id)
    assert caught.value.task_id == task_id
    assert hostile.raw_paths == [f"/v1/images/generation_tasks/{sent}"]


async def test_other_task_ids_are_percent_encoded(hostile: HostileServer) -> None:
    """Any other id stays one path segment, its reserved characters escaped."""
    with pytest.raises(TaskNotFoundError):
        await _retrieve_from(hostile, "a b?c#..%2F")
    assert hostile.raw_paths == ["/v1/images/generation_tasks/a%20b%3Fc%23..%252F"]


async def test_one_debug_line_per_request_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each request logs method, path, status, elapsed ms, attempt and request id at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="worldrouter_async")
    async with (
        Emulator(api_key=SECRET) as emulator,
        Session(SECRET, emulator.base_url, retry=FAST_RETRY) as session,
    ):
        task = await session.tasks.create("gpt-image-2", "a star")
        emulator.inject("503", route="poll")
        await session.tasks.retrieve(task.id)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert re.fullmatch(
        r"POST /v1/images/generation_tasks -> 200 in \d+\.\d ms \(attempt 1, request id [-\w]+\)",
        lines[0],
    )
    assert lines[1].startswith(f"GET /v1/images/generation_tasks/{task.id} -> 503 ")
    assert "(attempt 1, request id req_" in lines[1]
    assert lines[2].startswith(f"GET /v1/images/generation_tasks/{task.id} -> 200 ")
    assert "(attempt 2, " in lines[2]
    assert len(lines) == 3
    retries = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage().startswith("retrying after") for r in retries] == [True]
    assert SECRET not in caplog.text


async def test_worldrouter_log_env_turns_on_logging(emulator: Emulator, tmp_path: Path) -> None:
    """WORLDROUTER_LOG=debug prints the per-request lines to stderr, never the key."""
    script = tmp_path / "run.py"
    script.write_text(
        "import asyncio, sys\n"
        "from worldrouter_async import Session\n"
        "async def main():\n"
        "    async with Session(sys.argv[1], sys.argv[2]) as session:\n"
        "        await session.tasks.create('gpt-image-2', 'a star')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "WORLDROUTER_LOG": "debug"}
    async with Emulator(api_key=SECRET) as emulator:
        done = await anyio.run_process(
            [sys.executable, str(script), SECRET, emulator.base_url], env=env, check=False
        )
    assert done.returncode == 0, done.stderr
    assert b"DEBUG worldrouter_async: POST /v1/images/generation_tasks -> 200 in " in done.stderr
    assert SECRET.encode() not in done.stderr


async def test_worldrouter_log_must_be_a_level(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown WORLDROUTER_LOG value is a ConfigurationError naming the choices."""
    monkeypatch.setenv("WORLDROUTER_LOG", "loud")
    session = Session("k", emulator.base_url)
    with pytest.raises(ConfigurationError, match="debug, info, warning"):
        await session.__aenter__()
    await session.aclose()
