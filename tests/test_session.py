"""Session configuration: key and base URL resolution, refusals before any I/O, lifecycle."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from worldrouter_async import (
    ConfigurationError,
    InvalidRequestError,
    LocalStatus,
    RateLimitError,
    RetryPolicy,
    Session,
    TaskAbandonedError,
    TaskTimeoutError,
)
from worldrouter_async._settings import DEFAULT_BASE_URL
from worldrouter_async.testing import Emulator, FakeClock

from .conftest import SessionFactory


def test_missing_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key and no env var: the error says which variable to set."""
    monkeypatch.delenv("WORLDROUTER_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="WORLDROUTER_API_KEY"):
        Session()


def test_env_supplies_key_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORLDROUTER_API_KEY and WORLDROUTER_BASE_URL are read when no arguments are given."""
    monkeypatch.setenv("WORLDROUTER_API_KEY", "from-env")
    monkeypatch.setenv("WORLDROUTER_BASE_URL", "https://eu.worldrouter.example/v1/")
    assert Session().base_url == "https://eu.worldrouter.example/v1"
    monkeypatch.delenv("WORLDROUTER_BASE_URL")
    assert Session().base_url == DEFAULT_BASE_URL
    assert DEFAULT_BASE_URL.endswith("/v1")


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "empty"), ("   ", "empty"), ("sk-abc\n", "control characters"), ("a\x00b", "control")],
)
def test_bad_keys_are_refused_without_echoing_them(key: str, message: str) -> None:
    """Empty keys and keys with control characters fail before any I/O."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        Session(key)
    assert isinstance(caught.value, ValueError)
    assert key.strip() == "" or key not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/v1",
        "http://localhost:80@evil.example/v1",
        "http://127.0.0.1.evil.example/v1",
        "ftp://127.0.0.1/v1",
        "not a url",
    ],
)
def test_unsafe_base_urls_are_refused(url: str) -> None:
    """Plain http to a non-loopback host, credentials in the URL or odd schemes are refused."""
    with pytest.raises(ConfigurationError):
        Session("k", url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/v1", "http://localhost/v1", "http://[::1]:9/v1", "https://x.y/v1"],
)
def test_safe_base_urls_are_accepted(url: str) -> None:
    """https anywhere, plain http only on loopback."""
    assert Session("k", url).base_url == url


def test_allow_insecure_permits_plain_http() -> None:
    """allow_insecure=True is the explicit opt-in for a trusted network."""
    assert Session("k", "http://10.0.0.5/v1", allow_insecure=True).base_url == "http://10.0.0.5/v1"


@pytest.mark.anyio
async def test_a_session_is_used_inside_async_with(emulator: Emulator) -> None:
    """Using a session before opening or after closing is a clear RuntimeError."""
    session = Session(emulator.api_key, emulator.base_url)
    with pytest.raises(RuntimeError, match="async with"):
        await session.submit("gpt-image-2", "p")
    async with session:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        session.track("imgtask_1")
    with pytest.raises(RuntimeError, match="opened once"):
        await session.__aenter__()
    await session.aclose()  # idempotent


@pytest.mark.anyio
async def test_track_refuses_an_empty_task_id(session: Session) -> None:
    """A blank task ID is an InvalidRequestError, not a GET to the collection."""
    with pytest.raises(InvalidRequestError, match="task_id must be a non-empty string"):
        session.track("")


@pytest.mark.anyio
async def test_cancelled_open_leaves_nothing_running(emulator: Emulator) -> None:
    """A timeout around opening a session cancels cleanly: no poller task is left behind."""
    session = Session(emulator.api_key, emulator.base_url)
    with anyio.move_on_after(0):
        await session.__aenter__()
    await anyio.sleep(0.01)
    assert not [t for t in asyncio.all_tasks() if "worldrouter-async poller" in t.get_name()]


@pytest.mark.anyio
async def test_retries_and_rate_limit_pauses_run_on_the_session_clock(
    clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """Three 429s with Retry-After 30 s delay a create by exactly 90 virtual seconds."""
    clocked_emulator.inject("429", route="create", retry_after=30.0, count=3)
    async with Session(clocked_emulator.api_key, clocked_emulator.base_url, clock=clock) as s:
        task = await s.tasks.create("gpt-image-2", "a star")
    assert task.id in clocked_emulator.tasks
    assert clock.now() == 90.0
    assert [t for t, route, _ in clocked_emulator.requests] == [0.0, 30.0, 60.0, 90.0]


@pytest.mark.anyio
async def test_rate_limit_patience_is_measured_on_the_session_clock(
    clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """With 50 s of patience, 429s every 30 s give up at the first one past 50 s."""
    clocked_emulator.inject("429", route="create", retry_after=30.0, count=5)
    retry = RetryPolicy(attempts=1, rate_limit_patience=50.0)
    async with Session(
        clocked_emulator.api_key, clocked_emulator.base_url, retry=retry, clock=clock
    ) as session:
        with pytest.raises(RateLimitError):
            await session.tasks.create("gpt-image-2", "a star")
    assert clock.now() == 60.0
    assert clocked_emulator.counters.rate_limited == 3


@pytest.mark.anyio
async def test_a_session_deadline_of_fifteen_minutes_takes_no_real_time(
    clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """The default 900 s task timeout on the fake clock ends exactly at 900 s."""
    async with Session(clocked_emulator.api_key, clocked_emulator.base_url, clock=clock) as s:
        handle = await s.submit("gpt-image-2", "[never] a star")
        with pytest.raises(TaskTimeoutError):
            await handle
    assert clock.now() == 900.0


@pytest.mark.anyio
async def test_generated_idempotency_keys_are_random_uuid4s(
    session: Session, emulator: Emulator
) -> None:
    """Each create sends a fresh version-4 UUID as its Idempotency-Key."""
    for _ in range(20):
        await session.tasks.create("gpt-image-2", "a")
    keys = emulator.idempotency_keys
    assert len(set(keys)) == 20
    for key in keys:
        assert key is not None
        parsed = uuid.UUID(key)
        assert (str(parsed), parsed.version, parsed.variant) == (key, 4, uuid.RFC_4122)


# --- cancellation leaves no orphan ----------------------------------------------------------


async def _until(condition: Callable[[], object]) -> None:
    """Wait for session or emulator state that has no event to await (bounded)."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


def _creates_in_flight() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("worldrouter-async create")]


@pytest.mark.anyio
async def test_a_generate_cancelled_after_its_create_leaves_the_task_reachable(
    session: Session, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A web client leaves mid-generate: the task is untracked, recorded, logged, streamed."""
    changes = session.status_changes()
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(session.generate, "gpt-image-2", "[never] a kite")
        await _until(lambda: session.stats.pending == 1)
        task_group.cancel_scope.cancel()
    (task_id,) = emulator.tasks
    assert session.stats.pending == 0
    (record,) = session.abandoned
    assert (record.task_id, record.status, record.ambiguous) == (task_id, "queued", False)
    assert record.request is not None
    assert record.request.prompt == "[never] a kite"
    assert "generate was cancelled" in record.reason
    assert task_id in caplog.text
    assert "Session.abandoned" in caplog.text
    await session.aclose()
    (ending,) = [change async for change in changes]
    assert (ending.task_id, ending.new, ending.final) == (task_id, LocalStatus.ABANDONED, True)
    assert isinstance(ending.handle.exception(), TaskAbandonedError)


@pytest.mark.anyio
async def test_a_create_whose_caller_left_mid_flight_is_recorded_when_it_answers(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator, clock: FakeClock
) -> None:
    """Cancelled while its create is on the wire: the answer still lands in `abandoned`."""
    clocked_emulator.slow_rate, clocked_emulator.slow_delay = 1.0, 5.0
    clock.autojump = False  # the server answers when the test advances the clock
    async with make_clocked_session() as session:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(session.generate, "gpt-image-2", "a kite")
            await _until(lambda: clocked_emulator.idempotency_keys)  # sent, not answered
            task_group.cancel_scope.cancel()
        assert not clocked_emulator.tasks  # cancelled before the server made the task
        clock.advance(5.0)
        await _until(lambda: session.abandoned)
        (record,) = session.abandoned
        assert session.stats.pending == 0  # recorded, never tracked
    assert [record.task_id] == list(clocked_emulator.tasks)
    assert [record.idempotency_key] == clocked_emulator.idempotency_keys


@pytest.mark.anyio
async def test_a_create_cut_off_for_good_leaves_its_idempotency_key(
    session: Session, emulator: Emulator
) -> None:
    """The server made the task but never answered: the key the create was sent with is kept."""
    emulator.inject("hang_after_create", route="create")
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(session.submit, "gpt-image-2", "a kite")
            await _until(lambda: emulator.tasks)
            scope.cancel()
    await session.aclose()
    (record,) = session.abandoned
    assert record.ambiguous
    assert record.task_id is None
    assert [record.idempotency_key] == emulator.idempotency_keys


@pytest.mark.anyio
async def test_submit_many_cancelled_mid_way_leaves_every_created_task_reachable(
    session: Session, emulator: Emulator
) -> None:
    """A cancelled bulk submit: each task the server made is recorded once, none tracked."""
    requests = [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(2000)]
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(functools.partial(session.submit_many, requests, concurrency=16))
        await _until(lambda: emulator.counters.creates >= 100)
        task_group.cancel_scope.cancel()
    await _until(lambda: not _creates_in_flight())  # their answers are recorded as they land
    created = emulator.counters.creates
    assert 100 <= created < 2000
    assert len(session.abandoned) == created
    assert sorted(record.task_id or "" for record in session.abandoned) == sorted(emulator.tasks)
    assert session.stats.pending == 0
    polls = emulator.counters.polls
    await anyio.sleep(0.05)  # FAST_POLL would poll a tracked task several times meanwhile
    assert emulator.counters.polls == polls
