"""Opening a journal file for a run: the OS lock, the refusal of a silent fresh start, the
durable SQLite store, and the claim of the output (a directory or a bucket prefix), undone
in order on failure.

This is what a journal *path* given to `BatchRunner` means; a `JournalStore` given instead
is opened, locked and closed by its caller, and gets no output-directory claim.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from ._claim import JournalName, OutputClaim, claim_output, refuse_fresh_start
from ._errors import JournalError
from ._lock import JournalLock
from ._outputs import Output
from .journal import SqliteJournal


class LocalJournal:
    """A journal file the runner opens, locks and claims its output directory for.

    Args:
        path: the journal file (created when missing).
        output: the run's output, claimed for this journal; None: no claim.
        new_journal: accept a fresh start over images, or a journal below the claim's mark.
    """

    def __init__(self, path: Path, output: Output | None, *, new_journal: bool) -> None:
        self.path = path
        self._output = output
        self._name = JournalName(str(path.absolute()), str(path))
        self._new_journal = new_journal
        self._lock = JournalLock(path)
        self._journal: SqliteJournal | None = None
        self._claim: OutputClaim | None = None

    async def open(self) -> SqliteJournal:
        """Lock, check and open the journal, then claim the output directory for it."""
        await anyio.to_thread.run_sync(self._prepare)
        try:
            journal = await SqliteJournal.open(self.path)
        except BaseException:
            self._lock.release()
            raise
        out = self._output
        try:
            if out is not None:
                claim = partial(
                    claim_output, out, journal.file, self._name, new_journal=self._new_journal
                )
                self._claim = await anyio.to_thread.run_sync(claim)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await journal.aclose()
            self._lock.release()
            raise
        self._journal = journal
        return journal

    async def keep_claim(self) -> None:
        """Move the output's claim as the journal advances, where that is not done in the
        journal's own commit (a bucket); returns at once otherwise. Runs until cancelled."""
        if self._claim is not None:
            await self._claim.keep_up()

    async def close(self) -> None:
        """Close the journal (even when cancelled) and drop the lock."""
        journal, self._journal = self._journal, None
        if journal is not None:
            with anyio.CancelScope(shield=True):
                if self._claim is not None:
                    await anyio.to_thread.run_sync(self._claim.flush)
                await journal.aclose()
            self._lock.release()

    def _prepare(self) -> None:
        """Lock the journal file, then refuse a silent fresh start (unlocking on error)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise JournalError(
                f"cannot open a journal at {self.path} ({exc.strerror or exc}); "
                "choose an output directory (or journal path) that can be written"
            ) from exc
        try:
            self._refuse_fresh_start_over_images()
        except BaseException:
            self._lock.release()
            raise

    def _refuse_fresh_start_over_images(self) -> None:
        out = self._output
        if out is not None and not self.path.exists() and not self._new_journal:
            refuse_fresh_start(out, self._name)
