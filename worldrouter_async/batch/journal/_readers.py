"""Reading an existing SQLite journal without running a job (``status``, the gallery, tests):
rows one at a time in flat memory, and the invalid lines of the last run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ._rows import InvalidLine, JournalRow
from ._sqlite_file import SqliteFile


def read_rows(path: str | os.PathLike[str]) -> list[JournalRow]:
    """Every row of an existing journal, in input order."""
    return list(iter_rows(path))


def iter_invalid_lines(path: str | os.PathLike[str]) -> Iterator[InvalidLine]:
    """The input lines the last run on an existing journal could not send, in input order."""
    file = SqliteFile(Path(path), create=False)
    try:
        yield from file.iter_invalid()
    finally:
        file.close()


def iter_rows(path: str | os.PathLike[str]) -> Iterator[JournalRow]:
    """The rows of an existing journal, in input order, one at a time: memory stays flat
    however many rows it holds (`worldrouter-async status`)."""
    file = SqliteFile(Path(path), create=False)
    try:
        yield from file.iter_rows()
    finally:
        file.close()
