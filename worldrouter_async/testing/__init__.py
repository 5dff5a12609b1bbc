"""Test helpers for code that uses worldrouter_async: the emulator and fast policies.

Example:
    >>> from worldrouter_async.testing import Emulator, FAST_POLL
    >>> async def test_my_code():  # doctest: +SKIP
    ...     async with Emulator() as emu:
    ...         async with Session("test-key", emu.base_url, poll=FAST_POLL) as session:
    ...             assert (await session.generate("gpt-image-2", "a cat")).urls

`EmulatedAPI` is the emulator's behaviour without a server: ``await api.handle(request)``
answers an `EmulatedRequest` with an `EmulatedResponse` (`Emulator` is it served on loopback).
For tests without sockets, ``Session(transport=MemoryTransport())`` serves that API in
memory.

The pytest fixtures live in ``worldrouter_async.testing.pytest_plugin``; enable them with
``pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]`` in your ``conftest.py``.
"""

from .._config import FAST_POLL, FAST_RETRY, is_testing, set_testing
from ._clock import FakeClock
from ._emulator import (
    EmulatedAPI,
    EmulatedRequest,
    EmulatedResponse,
    EmulatedTask,
    Emulator,
    EmulatorCounters,
    Fault,
    FaultKind,
    NoAnswer,
    OutageKind,
    Route,
)
from ._memory import Handler, MemoryTransport

__all__ = [
    "FAST_POLL",
    "FAST_RETRY",
    "EmulatedAPI",
    "EmulatedRequest",
    "EmulatedResponse",
    "EmulatedTask",
    "Emulator",
    "EmulatorCounters",
    "FakeClock",
    "Fault",
    "FaultKind",
    "Handler",
    "MemoryTransport",
    "NoAnswer",
    "OutageKind",
    "Route",
    "is_testing",
    "set_testing",
]
