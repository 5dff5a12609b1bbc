"""Testing time-dependent code on virtual time: minutes of polling in milliseconds.

Give the emulator and the session one `FakeClock`; whenever your test is only waiting,
virtual time jumps to the next timer, so deadlines and poll schedules are exact.
"""

import pytest

import worldrouter_async as wr
from worldrouter_async.testing import Emulator, FakeClock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def generate_or_give_up(session: wr.Session, prompt: str, *, minutes: float) -> str | None:
    """The code under test: wait at most `minutes` for an image, else give up."""
    handle = await session.submit("gpt-image-2", prompt, timeout=minutes * 60)
    try:
        return (await handle).urls[0]
    except wr.TaskTimeoutError:
        return None


@pytest.mark.anyio
async def test_gives_up_after_ten_minutes() -> None:
    clock = FakeClock()
    async with (
        Emulator(clock=clock) as emulator,
        wr.Session(emulator.api_key, emulator.base_url, clock=clock) as session,
    ):
        assert await generate_or_give_up(session, "[never] a star", minutes=10) is None
    assert clock.now() == 600.0  # ten virtual minutes, a few real milliseconds


@pytest.mark.anyio
async def test_a_real_length_generation_with_the_default_poll_schedule() -> None:
    clock = FakeClock()
    async with (
        Emulator(clock=clock, time_scale=1.0) as emulator,  # real durations: about 26 s
        wr.Session(emulator.api_key, emulator.base_url, clock=clock) as session,
    ):
        url = await generate_or_give_up(session, "a star", minutes=10)
        assert url is not None
        stats = session.stats
    assert 10.0 < clock.now() < 60.0
    assert stats.polls < 10  # the default schedule: a handful of polls, not one a second
