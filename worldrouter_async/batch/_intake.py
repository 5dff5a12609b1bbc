"""Reading the input of a bulk run: chunks of requests journaled as intents before anything
is sent, and the lines that cannot be sent (unreadable, repeated, edited) set apart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from itertools import islice
from typing import TypeVar

import anyio.lowlevel

from .._session import Session
from ..models import ImageRequest
from ._jsonl import BatchItem, LineError, as_item
from ._outcomes import Outcome, OutcomeKind, Source
from .journal import InvalidLine, JournalRow, JournalStore, State, encode_request

_T = TypeVar("_T")
#: What `BatchRunner.run` reads: requests, and lines that could not be read as one.
Input = ImageRequest | BatchItem | LineError


class Intake:
    """Journals the input of one run, a chunk at a time, and sorts out what cannot be sent.

    Args:
        session: the session whose ignored-parameter warnings name each request.
        store: the journal the intents are committed to.
        run: the id of this run (a key read twice in one run is a repeat).
    """

    def __init__(self, session: Session, store: JournalStore, run: str) -> None:
        self._session = session
        self._store = store
        self._run = run

    async def start(self) -> None:
        """Forget the invalid lines of earlier runs: they are old news."""
        await self._store.record_invalid(self._run, [])

    async def take(
        self, chunk: list[Input], position: int
    ) -> tuple[list[JournalRow], list[InvalidLine]]:
        """Journal a chunk read at `position`: its rows to act on, and its invalid lines (in
        input order, recorded in the journal)."""
        unreadable = [_unreadable(entry) for entry in chunk if isinstance(entry, LineError)]
        items = [
            as_item(request, position + i)
            for i, request in enumerate(chunk)
            if not isinstance(request, LineError)
        ]
        for item in items:
            if not item.line:  # a JSONL item was reported with its line when read
                self._session.report_ignored(
                    item.request, source=f"<batch request {item.key!r}>", line=0
                )
        rows, invalid = await self._register(items, position)
        invalid = sorted([*unreadable, *invalid], key=lambda entry: entry.line)
        if invalid:
            await self._store.record_invalid(self._run, invalid)
        return rows, invalid

    async def _register(
        self, items: list[BatchItem], first_position: int
    ) -> tuple[list[JournalRow], list[InvalidLine]]:
        """Commit the intent of every new request of a chunk before anything is sent."""
        existing = await self._store.lookup([item.key for item in items])
        rows: list[JournalRow] = []
        new: list[JournalRow] = []
        invalid: list[InvalidLine] = []
        seen: list[str] = []
        in_chunk: set[str] = set()
        for offset, item in enumerate(items):
            row = existing.get(item.key)
            if item.key in in_chunk or (row is not None and row.run == self._run):
                reason = f'id "{item.key}" repeats an earlier request'
                invalid.append(InvalidLine(item.line, item.key, reason))
                continue
            in_chunk.add(item.key)
            if row is None:
                row = JournalRow(
                    key=item.key,
                    position=first_position + offset,
                    request=item.request,
                    idempotency_key=str(uuid.uuid4()),
                    state=State.PENDING,
                    run=self._run,
                )
                new.append(row)
            else:
                seen.append(item.key)
                if encode_request(row.request) != encode_request(item.request):
                    invalid.append(
                        InvalidLine(
                            item.line,
                            item.key,
                            f'request "{item.key}" differs from the one journaled in '
                            f"{self._store.path}; restore it, give it a new id, or use a new "
                            "journal",
                            journaled=True,
                        )
                    )
                    continue
            rows.append(row)
        await self._store.add(new)
        await self._store.mark_seen(seen, self._run)
        return rows, invalid


def invalid_outcome(line: InvalidLine) -> Outcome:
    """The ``invalid`` outcome of a line that could not be sent."""
    return Outcome(
        line.key, OutcomeKind.INVALID, Source.JOURNAL, error=line.reason, line=line.line or None
    )


def _unreadable(error: LineError) -> InvalidLine:
    return InvalidLine(error.line, f"line-{error.line}", error.message)


async def chunks(
    source: Iterable[_T] | AsyncIterable[_T], size: int
) -> AsyncGenerator[list[_T], None]:
    """Lists of up to `size` items from a sync or async iterable, read only as needed."""
    if isinstance(source, AsyncIterable):
        chunk: list[_T] = []
        async for item in source:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    iterator = iter(source)
    while chunk := list(islice(iterator, size)):
        yield chunk
        await anyio.lowlevel.checkpoint()
