"""Test helpers for code that uses worldrouter_async: the emulator and fast policies.

Example:
    >>> from worldrouter_async.testing import Emulator, FAST_POLL
    >>> async def test_my_code():  # doctest: +SKIP
    ...     async with Emulator() as emu:
    ...         async with Session("test-key", emu.base_url, poll=FAST_POLL) as session:
    ...             assert (await session.generate("gpt-image-2", "a cat")).urls

The pytest fixtures live in ``worldrouter_async.testing.pytest_plugin``; enable them with
``pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]`` in your ``conftest.py``.
"""

from typing import Final

from .._config import PollPolicy, RetryPolicy
from ._emulator import EmulatedTask, Emulator, EmulatorCounters, Fault, FaultKind, Route

FAST_POLL: Final = PollPolicy(initial_delay=0.005, factor=1.5, max_interval=0.02, jitter=0.0)
"""Polls every few milliseconds: pair it with the emulator's default ``time_scale``."""

FAST_RETRY: Final = RetryPolicy(attempts=4, base=0.001, cap=0.01)
"""Retries after a millisecond or two, so fault tests stay fast."""

__all__ = [
    "FAST_POLL",
    "FAST_RETRY",
    "EmulatedTask",
    "Emulator",
    "EmulatorCounters",
    "Fault",
    "FaultKind",
    "Route",
]
