"""One run per journal: an exclusive OS lock held for the whole run.

The lock is on a sidecar file (``JOURNAL.lock``, holding the owner's pid) rather than on the
journal itself, so it never interferes with SQLite's own locks. The OS drops it when the
process dies, kill -9 included, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import JournalInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked against each other
    fcntl = None  # type: ignore[assignment]


class JournalLock:
    """An exclusive, non-blocking lock on a journal, released by `release` or process exit."""

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(journal.name + ".lock")
        self._journal = journal
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `JournalInUseError` naming the pid that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise JournalInUseError(
                    f"journal {self._journal} is in use by pid {holder}; wait for that run to "
                    "end (or stop it) before starting another on the same journal"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; a lock file without a lock means nothing)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
