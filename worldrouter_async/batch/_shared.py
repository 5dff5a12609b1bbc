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

from .journal import JournalRow, SharedJournalStore

#: Held keys asked for again per claim.
RECLAIM_CHUNK: Final = 256


class SharedRows:
    """One runner's claims on a shared journal, and the keys it waits for."""

    def __init__(self, store: SharedJournalStore) -> None:
        self._store = store
        self._held: list[str] = []  # keys another live worker holds, to claim again later

    async def claim(self, rows: Sequence[JournalRow]) -> list[JournalRow]:
        """The rows of `rows` this worker now holds, as stored, in order; the keys another
        live worker holds are kept to ask for again."""
        return await self._claim_keys([row.key for row in rows])

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
