"""Reading bulk requests from JSON Lines, reporting bad lines without stopping the rest."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
from attrs import define

from .._errors import WorldRouterError
from .._support import warn_ignored_in_file
from ..models import ImageRequest, converter

#: The fields a JSONL line may hold: ``id`` and the request's own.
LINE_FIELDS: Final = frozenset({"id", *(a.name for a in attrs.fields(ImageRequest))})
#: The byte-order mark Excel and other Windows tools put before the first line.
BOM: Final = "\ufeff"


@define(frozen=True)
class BatchItem:
    """One request of a bulk job and the key the journal knows it by."""

    key: str
    request: ImageRequest
    #: The JSONL line it came from (0 when it did not come from a file).
    line: int = 0


@define(frozen=True)
class LineError:
    """A JSONL line that could not be read as a request."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def parse_line(
    text: str, *, line: int, defaults: Mapping[str, Any]
) -> BatchItem | LineError | None:
    """One JSONL line as a `BatchItem`, a `LineError`, or None for a blank line."""
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        return LineError(line, f"not valid JSON ({exc})")
    if not isinstance(record, dict):
        return LineError(line, f"expected a JSON object, got {type(record).__name__}")
    if problem := _field_problem(record):
        return LineError(line, problem)
    if "model" not in record and "model" not in defaults:
        return LineError(
            line, 'no "model": give the line one, such as {"model": "gpt-image-2"}, or a default'
        )
    key = record.pop("id", None)
    if key is not None and (not isinstance(key, str | int) or isinstance(key, bool)):
        return LineError(line, f"id must be a string or integer (got {json.dumps(key)})")
    try:
        request = converter.structure({**defaults, **record}, ImageRequest)
    except WorldRouterError as exc:
        return LineError(line, str(exc))
    return BatchItem(
        key=str(key) if key is not None else f"line-{line}", request=request, line=line
    )


def _field_problem(record: Mapping[str, Any]) -> str | None:
    """What is wrong with the fields of a line, in JSON terms (the user wrote JSON), or None."""
    if unknown := sorted(record.keys() - LINE_FIELDS):
        names = ", ".join(json.dumps(name) for name in unknown)
        return (
            f"unknown field {names}; a line may hold {', '.join(sorted(LINE_FIELDS))}. "
            f'Put other API parameters in an "extra" object, such as {{"extra": {{{names}: ...}}}}'
        )
    if "prompt" not in record:
        return 'no "prompt": every line needs one, such as {"prompt": "a lighthouse at dusk"}'
    return None


def iter_jsonl(
    path: str | os.PathLike[str], *, defaults: Mapping[str, Any] | None = None
) -> Iterator[BatchItem | LineError]:
    """Each line of `path` as a `BatchItem` or a `LineError`, read lazily (blank lines skipped).

    The file is read as bytes and decoded line by line, so one line that is not UTF-8 is a
    bad line like any other; a byte-order mark before the first line (Excel and other Windows
    tools write one) is skipped. Repeated ids are left to the runner, which reports them
    (or to `mark_repeats`, to check a whole file without running it).
    """
    with Path(path).open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield LineError(number, f"not valid UTF-8 (byte {exc.start + 1} of the line)")
                continue
            if number == 1:
                text = text.removeprefix(BOM)
            parsed = parse_line(text, line=number, defaults=defaults or {})
            if isinstance(parsed, BatchItem):
                warn_ignored_in_file(parsed.request, filename=str(path), lineno=number)
            if parsed is not None:
                yield parsed


def read_jsonl(
    path: str | os.PathLike[str], *, defaults: Mapping[str, Any] | None = None
) -> tuple[list[BatchItem], list[LineError]]:
    """Every request in `path` plus the lines that failed, each with its line number.

    Lines without an ``id`` are keyed by line number, so keep the file unchanged between a
    run and its resume (or give every line an ``id``). For files too large to hold in
    memory, pass `iter_jsonl` to the runner instead.
    """
    items: list[BatchItem] = []
    errors: list[LineError] = []
    for parsed in mark_repeats(iter_jsonl(path, defaults=defaults)):
        if isinstance(parsed, BatchItem):
            items.append(parsed)
        else:
            errors.append(parsed)
    return items, errors


def mark_repeats(parsed: Iterable[BatchItem | LineError]) -> Iterator[BatchItem | LineError]:
    """`parsed` with each item whose id an earlier line already used turned into a `LineError`.

    Holds the ids seen so far (not the requests), so it suits checking a whole file.
    """
    seen: dict[str, int] = {}
    for entry in parsed:
        if isinstance(entry, BatchItem):
            if entry.key in seen:
                yield LineError(entry.line, f'id "{entry.key}" repeats line {seen[entry.key]}')
                continue
            seen[entry.key] = entry.line
        yield entry


def as_item(request: ImageRequest | BatchItem, position: int) -> BatchItem:
    """Key a plain request by its position (``item-N``, from 1); a `BatchItem` keeps its key."""
    if isinstance(request, BatchItem):
        return request
    return BatchItem(key=f"item-{position + 1}", request=request)
