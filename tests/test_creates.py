"""Creates are paid: ambiguity, resending with the same key, fresh connections, slow start."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from tests.conftest import SessionFactory
from worldrouter_async import (
    AmbiguousCreateError,
    AuthenticationError,
    CreateHeldBackError,
    ImageRequest,
    InvalidRequestError,
    Session,
    Timeouts,
    WrongEventLoopError,
)
from worldrouter_async.batch import BatchItem, BatchRunner, OutcomeKind
from worldrouter_async.testing import FAST_RETRY, Emulator

pytestmark = pytest.mark.anyio


async def test_ambiguous_create_is_not_resent_by_default(
    session: Session, emulator: Emulator
) -> None:
    """Off by default: a create that may have landed raises once and is never resent."""
    assert session.retry_ambiguous_creates is False
    emulator.inject("drop_after_create", route="create")
    with pytest.raises(AmbiguousCreateError) as caught:
        await session.tasks.create("gpt-image-2", "a star", idempotency_key="key-1")
    assert caught.value.idempotency_key == "key-1"
    assert emulator.counters.create_requests == 1
    assert emulator.counters.creates == 1


async def test_ambiguous_error_names_the_deduplication_assumption(
    session: Session, emulator: Emulator
) -> None:
    """The message says a resend is safe only where the server deduplicates by key."""
    emulator.inject("500", route="create")
    with pytest.raises(AmbiguousCreateError) as caught:
        await session.tasks.create("gpt-image-2", "a star", idempotency_key="key-1")
    message = str(caught.value)
    assert "idempotency_key='key-1'" in message
    assert "safe only if your deployment deduplicates creates by Idempotency-Key" in message
    assert "so it is not billed twice" not in message


async def test_retry_ambiguous_resends_with_the_same_key(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """On: a dropped answer is resent with the same key and the server replays its task."""
    emulator.inject("drop_after_create", route="create")
    emulator.inject("500_after_create", route="create")
    async with make_session(retry_ambiguous_creates=True) as session:
        assert session.retry_ambiguous_creates is True
        task = await session.tasks.create("gpt-image-2", "a star", idempotency_key="key-1")
        assert session.stats.retries == 2
    assert emulator.idempotency_keys == ["key-1"] * 3
    assert emulator.counters.creates == 1
    assert emulator.counters.idempotent_replays == 2
    assert list(emulator.tasks) == [task.id]


async def test_retry_ambiguous_is_bounded_by_the_retry_policy(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """On: a create that stays ambiguous is resent `attempts` times in all, then raises."""
    emulator.inject("500", route="create", count=10)
    async with make_session(retry_ambiguous_creates=True) as session:
        with pytest.raises(
            AmbiguousCreateError, match=r"it was resent with the same key\. Resending"
        ):
            await session.tasks.create("gpt-image-2", "a star")
    assert len(emulator.idempotency_keys) == 4  # FAST_RETRY.attempts
    assert len(set(emulator.idempotency_keys)) == 1


async def test_a_create_after_an_idle_gap_gets_a_fresh_connection(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """Back-to-back creates share a connection; one after `create_keepalive` opens anew."""
    async with make_session(timeouts=Timeouts(create_keepalive=0.05)) as session:
        for _ in range(3):
            await session.tasks.create("gpt-image-2", "a star")
        assert emulator.counters.connections == 1
        await anyio.sleep(0.06)
        await session.tasks.create("gpt-image-2", "a star")
        assert emulator.counters.connections == 2


async def test_idle_polls_keep_reusing_their_connection(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """GETs are safe to resend, so their pool keeps idle connections as before."""
    async with make_session(timeouts=Timeouts(create_keepalive=0.05)) as session:
        task = await session.tasks.create("gpt-image-2", "a star")
        await session.tasks.retrieve(task.id)
        await anyio.sleep(0.06)
        await session.tasks.retrieve(task.id)
    assert emulator.counters.connections == 2  # one for the create, one for both GETs


async def test_no_create_races_the_server_closing_an_idle_connection() -> None:
    """Gaps just under the server's keep-alive timeout: no create is ever ambiguous."""
    count = 15
    async with (
        Emulator(keepalive_timeout=0.05) as emulator,
        Session(
            emulator.api_key,
            emulator.base_url,
            retry=FAST_RETRY,
            timeouts=Timeouts(create_keepalive=0.02),
        ) as session,
    ):
        for _ in range(count):
            await session.tasks.create("gpt-image-2", "a star")  # raises if ambiguous
            await anyio.sleep(random.uniform(0.045, 0.05))
    assert emulator.counters.creates == emulator.counters.create_requests == count
    assert emulator.counters.connections == count


# --- slow start: a session's first create goes alone ----------------------------------------


def _create_times(emulator: Emulator) -> list[float]:
    return [when for when, route, _ in emulator.requests if route == "create"]


async def test_the_first_create_goes_alone_then_the_rest_together(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator
) -> None:
    """Creates answering after 1 s: the first is sent alone, the other seven once it answered."""
    clocked_emulator.slow_rate, clocked_emulator.slow_delay = 1.0, 1.0
    requests = [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(8)]
    async with make_clocked_session() as session:
        handles = await session.submit_many(requests, concurrency=8)
        assert all(handle.task_id for handle in handles)
    assert _create_times(clocked_emulator) == [0.0] + [1.0] * 7


async def test_after_a_failed_first_create_the_next_one_goes_alone_again(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator
) -> None:
    """A refused first create opens nothing: the second goes alone, the rest after it."""
    clocked_emulator.slow_rate, clocked_emulator.slow_delay = 1.0, 1.0
    clocked_emulator.inject("413", route="create")
    requests = [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(8)]
    async with make_clocked_session() as session:
        handles = await session.submit_many(requests, concurrency=8)
        assert sum(handle.task_id is not None for handle in handles) == 7
    assert _create_times(clocked_emulator) == [0.0, 0.0] + [1.0] * 6


async def _submit_many(session: Session, count: int) -> list[BaseException | None]:
    requests = [{"model": "gpt-image-2", "prompt": f"p{i}"} for i in range(count)]
    handles = await session.submit_many(requests, concurrency=16)
    return [handle.exception() for handle in handles]


async def _pipeline(session: Session, count: int) -> list[BaseException | None]:
    requests = ({"model": "gpt-image-2", "prompt": f"p{i}"} for i in range(count))
    async with session.pipeline(requests, max_pending=16) as handles:
        return [handle.exception() async for handle in handles]


@pytest.mark.parametrize("submit", [_submit_many, _pipeline])
async def test_a_wrong_key_costs_one_create(
    emulator: Emulator,
    submit: Callable[[Session, int], Awaitable[list[BaseException | None]]],
) -> None:
    """50 requests with a refused key: one create is sent, every handle raises the 401."""
    async with Session("wrong-key", emulator.base_url, retry=FAST_RETRY) as session:
        errors = await submit(session, 50)
    assert emulator.counters.create_requests == 1
    assert len(errors) == 50
    assert all(isinstance(error, AuthenticationError) for error in errors)
    assert all(error.status == 401 for error in errors)  # type: ignore[union-attr]
    assert sum("not sent" in str(error) for error in errors) == 49


async def test_a_refused_key_is_not_sent_again_and_the_error_says_why(
    emulator: Emulator,
) -> None:
    """After a 401 the session refuses creates at once, naming the fix."""
    async with Session("wrong-key", emulator.base_url, retry=FAST_RETRY) as session:
        with pytest.raises(AuthenticationError, match="Incorrect API key"):
            await session.submit("gpt-image-2", "a star")
        with pytest.raises(AuthenticationError, match="open a new Session with a valid key"):
            await session.generate("gpt-image-2", "a star")
    assert emulator.counters.create_requests == 1


async def test_a_batch_with_a_wrong_key_sends_one_create(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A 50-line batch with 16 create workers and a refused key: exactly one create."""
    items = [
        BatchItem(f"r{i}", ImageRequest(model="gpt-image-2", prompt=f"p{i}")) for i in range(50)
    ]
    wrong = Session("wrong-key", emulator.base_url, retry=FAST_RETRY)
    async with wrong, BatchRunner(wrong, tmp_path / "j.db", concurrency=16) as runner:
        outcomes = [outcome async for outcome in runner.run(items)]
    assert "the server refused the API key" in (runner.stop_reason or "")
    assert emulator.counters.create_requests == 1
    assert {outcome.kind for outcome in outcomes} == {OutcomeKind.PENDING}


# --- a session belongs to the event loop it was opened on -----------------------------------


async def test_a_session_used_from_another_event_loop_says_so_before_any_request(
    session: Session, emulator: Emulator
) -> None:
    """From a thread's own loop, or from no loop: WrongEventLoopError, and nothing is sent."""

    def in_another_loop() -> list[BaseException]:
        errors: list[BaseException] = []
        for use in (
            lambda: session.generate("gpt-image-2", "a star"),
            lambda: session.submit_many([{"model": "gpt-image-2", "prompt": "a"}]),
            lambda: session.tasks.retrieve("imgtask_1"),
        ):
            try:
                asyncio.run(use())
            except WrongEventLoopError as exc:
                errors.append(exc)
        try:
            session.track("imgtask_1")  # a plain call, from a thread with no loop at all
        except WrongEventLoopError as exc:
            errors.append(exc)
        return errors

    errors = await anyio.to_thread.run_sync(in_another_loop)
    assert len(errors) == 4
    assert all(isinstance(error, RuntimeError) for error in errors)
    assert "Open a Session per event loop" in str(errors[0])
    assert emulator.counters.create_requests == emulator.counters.polls == 0
    assert (await session.generate("gpt-image-2", "a star")).urls  # still fine at home


async def test_a_bad_timeout_is_refused_before_the_paid_create(
    session: Session, emulator: Emulator
) -> None:
    """A timeout that tracking would refuse is refused before the create, so it can never
    strand a task that was already paid for."""
    request = {"model": "gpt-image-2", "prompt": "a star"}
    with pytest.raises(InvalidRequestError, match="timeout must be positive"):
        await session.submit("gpt-image-2", "a star", timeout=-1)
    with pytest.raises(InvalidRequestError, match="timeout must be positive"):
        await session.submit_many([request], timeout=0)
    with pytest.raises(InvalidRequestError, match="timeout must be positive"):
        session.pipeline([request], timeout=math.nan)
    assert emulator.counters.create_requests == 0


async def test_a_wrong_model_or_url_costs_one_create() -> None:
    """A refusal about the model (or a 404 before any create worked: a wrong URL) holds back
    every create like it: one request is sent, the rest say why they were not."""
    gemini = "gemini-2.5-flash-image"
    async with Emulator(models=frozenset({"gpt-image-2"})) as emulator:
        for base_url in (emulator.base_url, emulator.base_url + "/wrong"):
            before = emulator.counters.create_requests
            async with Session(emulator.api_key, base_url, retry=FAST_RETRY) as session:
                requests = [{"model": gemini, "prompt": f"p{i}"} for i in range(20)]
                handles = await session.submit_many(requests, concurrency=8)
            errors = [handle.exception() for handle in handles]
            held = [error for error in errors if isinstance(error, CreateHeldBackError)]
            assert len(held) == 19
            assert all("not sent" in str(error) for error in held)
            assert emulator.counters.create_requests - before <= 1  # a wrong path: no route
        assert emulator.counters.creates == 0


async def test_a_refusal_about_one_request_holds_back_nothing(
    make_clocked_session: SessionFactory, clocked_emulator: Emulator
) -> None:
    """An invalid size is about its own request: the creates queued behind it still go."""
    requests = [{"model": "gpt-image-2", "prompt": f"[never] {i}"} for i in range(5)]
    clocked_emulator.inject("413", route="create")
    async with make_clocked_session() as session:
        handles = await session.submit_many(requests, concurrency=5)
        assert [handle.task_id is not None for handle in handles].count(True) == 4
    assert clocked_emulator.counters.creates == 4


async def test_a_batch_with_a_wrong_model_sends_one_create(tmp_path: Path) -> None:
    """A 50-line batch for a model the server refuses: one create, the rest pending."""
    items = [
        BatchItem(f"r{i}", ImageRequest(model="gemini-2.5-flash-image", prompt=f"p{i}"))
        for i in range(50)
    ]
    async with Emulator(models=frozenset({"gpt-image-2"})) as emulator:
        session = Session(emulator.api_key, emulator.base_url, retry=FAST_RETRY)
        async with session, BatchRunner(session, tmp_path / "j.db", concurrency=16) as runner:
            outcomes = [outcome async for outcome in runner.run(items)]
        assert emulator.counters.create_requests == 1
    assert "for a reason every other create shares" in (runner.stop_reason or "")
    kinds = [outcome.kind for outcome in outcomes]
    assert kinds.count(OutcomeKind.FAILED) == 1
    assert kinds.count(OutcomeKind.PENDING) == 49
