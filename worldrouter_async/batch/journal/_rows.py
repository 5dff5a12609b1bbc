"""What a journal holds, whatever stores it: request rows, their states, invalid lines, marks.

These values are the vocabulary of the `JournalStore` protocol, so every store (SQLite here,
others later) reads and writes the same rows; `encode_request` is the one canonical form of
a request, used to store it and to spot an input line that was edited since it was journaled.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Final

from attrs import define

from ...models import ImageRequest, Usage, converter


class State(StrEnum):
    """Journal states of one request, in the order a request moves through them."""

    PENDING = "pending"  # intent recorded, no create sent (or one certainly refused)
    SUBMITTING = "submitting"  # create sent (or about to be); answer not recorded
    CREATED = "created"  # task ID recorded; waiting for the task
    COMPLETED = "completed"  # URLs recorded (files column says what is on disk)
    FAILED = "failed"  # the task or its create failed for good
    EXPIRED = "expired"  # the server no longer knows the task (404 on resume)


FINAL_STATES: Final = frozenset({State.COMPLETED, State.FAILED, State.EXPIRED})


@define(frozen=True)
class JournalRow:
    """One request as the journal holds it.

    `files` are relative to the run's output directory, so a resume from another working
    directory finds them; `digests` holds each file's SHA-256 as saved.
    """

    key: str
    position: int
    request: ImageRequest
    idempotency_key: str
    state: State
    task_id: str | None = None
    status: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    usage: Usage | None = None
    error: str | None = None
    sends: int = 0
    run: str | None = None


@define(frozen=True)
class InvalidLine:
    """An input line the last run could not send, recorded so `status` can show it later.

    `key` is the line's id (``line-N`` when it has none or cannot be read). `journaled` is
    True when `key` names a journal row this line no longer matches (its request was edited):
    the line then stands for that row in the counts.
    """

    line: int
    key: str
    reason: str
    journaled: bool = False


@define(frozen=True)
class HighWater:
    """How much a journal has recorded: its rows (intents) and the creates sent for them.

    Both only grow, so a journal found below a mark it once reached has lost records.
    """

    rows: int = 0
    sends: int = 0

    def covers(self, other: HighWater) -> bool:
        """True when this mark is at or above `other` on both counts."""
        return self.rows >= other.rows and self.sends >= other.sends


def encode_request(request: ImageRequest) -> str:
    """The canonical JSON of a request, used to store it and to spot edited input."""
    return json.dumps(converter.unstructure(request), sort_keys=True)
