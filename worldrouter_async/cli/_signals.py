"""SIGTERM as a clean stop: a long command ends as if interrupted, with its work journaled.

A container runtime or a scheduler stops a job with SIGTERM. The handler is installed
explicitly because a process running as PID 1 gets no default one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Final

EXIT_TERMINATED: Final = 143  # 128 + SIGTERM, as shells report a process ended by it


class Terminated(Exception):
    """SIGTERM stopped the command; it exits with `EXIT_TERMINATED`."""


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """While inside, SIGTERM cancels the current task, which then leaves as `Terminated`
    (any other cancellation still propagates as it is)."""
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # Windows: no loop signal handlers
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        yield
    except asyncio.CancelledError:
        if not terminated:
            raise
        task.uncancel()
        raise Terminated from None
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
