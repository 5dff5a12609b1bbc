"""Creates are paid: ambiguity, resending with the same key, and fresh connections."""

from __future__ import annotations

import random

import anyio
import pytest

from tests.conftest import SessionFactory
from worldrouter_async import AmbiguousCreateError, Session, Timeouts
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
