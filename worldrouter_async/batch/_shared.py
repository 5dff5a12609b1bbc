"""The rows one worker of a shared journal may act on: claimed as they are read, the rest
asked for again until their workers are done with them or die.

A shared journal (`SharedJournalStore`, the PostgreSQL one) gives each row to one live worker
at a time. `SharedRows` keeps, for one runner, the keys another live worker held when they
were read, and asks for them again every recheck interval: each is then reported once its
worker released it, or acted on here if that worker died. The runner dispatches what it gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from .journal import JournalRow, JournalStore, SharedJournalStore

#: Held keys asked for again per claim.
RECLAIM_CHUNK: Final = 256


class SharedRows:
    """One runner's claims on a shared journal, and the keys it waits for."""

    def __init__(self, store: SharedJournalStore, *, slice_size: int) -> None:
        self._store = store
        self._slice = slice_size
        self._held: list[str] = []  # keys another live worker holds, to claim again later

    async def claim_and_dispatch(
        self, rows: Sequence[JournalRow], dispatch: Callable[[list[JournalRow]], Awaitable[None]]
    ) -> None:
        """Claim `rows` a slice at a time and `dispatch` each slice (as stored, in order)
        before claiming the next; the keys another live worker holds are kept to ask for again.

        `dispatch` returns once the runner's create workers took the slice, so a worker holds
        about one slice of rows it has not started, and a job of a few hundred lines spreads
        over every worker that runs it instead of going whole to the first.
        """
        for start in range(0, len(rows), self._slice):
            await dispatch(
                await self._claim_keys([row.key for row in rows[start : start + self._slice]])
            )

    async def _claim_keys(self, keys: list[str]) -> list[JournalRow]:
        claimed = await self._store.claim(keys)
        self._held += [key for key in keys if key in claimed.held]
        return [claimed.rows[key] for key in keys if key in claimed.rows]

    async def take_over_held(
        self,
        dispatch: Callable[[list[JournalRow]], Awaitable[None]],
        *,
        stopped: Callable[[], bool],
    ) -> None:
        """Ask for the held keys again each recheck interval and `dispatch` what this worker
        gets, until none is held or the run `stopped`."""
        while self._held and not stopped():
            await self._store.wait_for_others()
            held, self._held = self._held, []
            for start in range(0, len(held), RECLAIM_CHUNK):
                await dispatch(await self._claim_keys(held[start : start + RECLAIM_CHUNK]))

    async def release(self, key: str) -> None:
        """This worker reported the row of `key`: others may have it."""
        await self._store.release(key)


def shared_rows(store: JournalStore, *, slice_size: int) -> SharedRows | None:
    """The claims of a runner on `store` when it is shared; None for a journal one run holds."""
    if isinstance(store, SharedJournalStore):
        return SharedRows(store, slice_size=slice_size)
    return None
