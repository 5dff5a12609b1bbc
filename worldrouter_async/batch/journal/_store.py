"""The seam between the bulk runner and wherever its journal lives: `JournalStore`.

The runner talks to a journal only through this protocol, so a new store (another
database, a service) is one module that implements it; `SqliteJournal` is the one shipped.
The contract in `JournalStore`'s docstring is what the runner relies on to never lose a
task and never pay twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from attrs import define

from ...models import Usage
from ._rows import InvalidLine, JournalRow


class JournalStore(Protocol):
    """What the runner needs from a journal: lookups and one named call per transition.

    A field a call does not name stays as it was.

    **Durability.** Every write method commits before it returns: once it returns, a crash of
    the process (or, for a store on disk, a power cut) cannot undo it. A write that cannot be
    committed raises `JournalError` and leaves nothing of itself behind; the runner then stops
    sending creates and reports the error after the outcomes so far. A call that is cancelled
    may or may not have committed, but never commits half.

    **The write-ahead rule.** `add` commits a request's intent (its row, ``pending``, with the
    idempotency key every send of it uses) before anything is sent for it, and `mark_submitting`
    commits ``submitting`` (and counts the send) before its create is sent. So after a crash at
    any instant a row is ``pending`` (nothing sent), ``submitting`` (a create may have landed:
    resent only with ``retry_ambiguous_creates``), or holds its task ID.

    **Concurrency.** The runner calls a store from many tasks at once, but never has two calls
    for the same key in flight: calls for one key arrive in order, calls for different keys
    commit in any order. `lookup` sees every write that returned before it was called.

    **One run at a time.** A store may assume that one runner writes the job while it runs.
    `BatchRunner` ensures this for the SQLite file it opens itself (an OS lock, see
    ``batch/_local.py``); a store handed to it by the caller must be locked by the caller.
    A store that several workers share at once implements `SharedJournalStore` too: the runner
    then acts only on the rows it claimed.

    **Not part of the seam.** The output claim and its high-water mark (``batch/_claim.py``)
    need a `ClaimingJournal` (`journal_id`, `high_water`, `on_advance`), which the SQLite file
    underneath implements, and the gallery reads that file too; the runner does both only
    for a journal path it opens itself, never for a store given to it.
    """

    @property
    def path(self) -> Path | str:
        """Where the journal lives, without secrets; used only to name it in messages."""
        ...

    async def aclose(self) -> None:
        """Release the store (the runner calls it only for a journal it opened itself)."""

    async def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of those `keys` that exist, every field as last committed."""
        ...

    async def add(self, rows: Sequence[JournalRow]) -> None:
        """Record new intents (state `pending`, keys not yet journaled), all or none.

        Committed before anything is sent for them: this is the first half of the
        write-ahead rule. Each row's `idempotency_key` is stored as given and never changes.
        """

    async def mark_seen(self, keys: Sequence[str], run: str) -> None:
        """Set the `run` of these existing rows, so a key read twice in one run is a repeat.

        A later `lookup` in the same run returns `run` on them.
        """

    async def record_invalid(self, run: str, lines: Sequence[InvalidLine]) -> None:
        """Record input lines `run` could not send, forgetting those of every other run.

        Lines of the same run accumulate across calls; ``record_invalid(run, [])`` at the
        start of a run clears the lines of earlier runs.
        """

    async def mark_submitting(self, key: str) -> None:
        """A create is about to be sent: state `submitting` and one more send counted.

        Committed before it returns, and the runner sends the create only after it returns
        (the second half of the write-ahead rule): a crash at any later instant leaves the
        row `submitting`, never `pending` with a task on the server. When it raises, nothing
        is sent. `sends` only grows.
        """

    async def mark_created(self, key: str, task_id: str | None, status: str | None) -> None:
        """The create answered: state `created`, the task ID and status, the error cleared."""

    async def mark_pending(self, key: str, error: str) -> None:
        """The create certainly created nothing (refused, never connected): back to
        `pending` with the reason, so a rerun sends it again."""

    async def mark_ambiguous(self, key: str, error: str) -> None:
        """The create may have landed (its answer never came): the row stays `submitting`,
        with the reason."""

    async def mark_failed(self, key: str, error: str, *, usage: Usage | None = None) -> None:
        """State `failed` with the reason: the task failed, or its create was refused for
        good. `usage` is recorded when given (a task that was paid for); None leaves it."""

    async def mark_expired(self, key: str, error: str) -> None:
        """State `expired` with the reason: the server no longer knows the task."""

    async def mark_unfinished(self, key: str, status: str | None, error: str) -> None:
        """Tracking stopped before the task ended (deadline, shutdown): the row stays
        `created`, with the last status and the reason, so a rerun tracks it again."""

    async def mark_completed(
        self, key: str, status: str, urls: Sequence[str], usage: Usage | None
    ) -> None:
        """State `completed` with status, URLs and usage (all replaced), the error cleared.

        Files are left as they are (`mark_files` records them once saved); called again when
        a rerun fetches fresh URLs for images it must download again.
        """

    async def mark_files(self, key: str, files: Sequence[str], digests: Sequence[str]) -> None:
        """The images are saved: their names (relative to the output directory) and SHA-256
        digests, in the same order, the error cleared."""

    async def mark_download_failed(self, key: str, error: str) -> None:
        """Saving the images failed: files and digests cleared, the reason recorded. The
        state stays `completed`, so a rerun only downloads."""


@define(frozen=True)
class Claimed:
    """What a claim got: the rows this worker now holds (as stored) and the keys that a live
    worker holds, to ask for again later."""

    rows: dict[str, JournalRow]
    held: frozenset[str]


@runtime_checkable
class SharedJournalStore(JournalStore, Protocol):
    """A journal that several workers run one job from at once (`PostgresJournal`).

    **Claims.** A worker acts on a row (sends its create, tracks its task, reports it) only
    after `claim` gave it that row, and until it calls `release`. A row is given to one
    worker at a time; a row whose worker died (by the store's own measure of liveness) can be
    claimed again, and `mark_submitting` raises `JournalError`, sending nothing, for a row this
    worker no longer holds. So every create is sent by at most one worker, and a dead
    worker's rows pass to the living: a task ID is tracked, ``submitting`` is ambiguous (as
    after a crash), ``pending`` is sent.

    **add** keeps the row another worker added first for the same key (its idempotency key is
    the one every send uses), so a worker reads rows back through `claim` before acting.
    """

    async def claim(self, keys: Sequence[str]) -> Claimed:
        """Take the rows of `keys` that no live worker holds, without waiting for any lock."""
        ...

    async def release(self, key: str) -> None:
        """This worker is done with the row of `key` (its outcome is reported)."""

    async def wait_for_others(self) -> None:
        """Wait a moment (the store's recheck interval) before asking for held rows again."""
