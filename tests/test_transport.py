"""The transport over real loopback HTTP: auth, error mapping, retries and hostile answers."""

from __future__ import annotations

import logging
import math
import socket

import pytest

from worldrouter_async import (
    AmbiguousCreateError,
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Session,
    TaskNotFoundError,
    Timeouts,
)
from worldrouter_async._transport import parse_retry_after
from worldrouter_async.testing import FAST_RETRY, Emulator

from .conftest import SessionFactory

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


async def test_silent_server_trips_the_read_timeout(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """A server that never answers raises APITimeoutError (also a TimeoutError)."""
    async with make_session(timeouts=Timeouts(read=0.2), retry=RetryPolicy(attempts=1)) as session:
        emulator.inject("hang", route="poll")
        with pytest.raises(APITimeoutError, match="read timeout") as caught:
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
        texts = [repr(session), str(session), repr(session.transport)]
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
