"""Reading bulk requests from JSON Lines, reporting bad lines without stopping the rest."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attrs import define

from .._errors import WorldRouterError
from .._support import warn_ignored_in_file
from ..models import ImageRequest, converter


@define(frozen=True)
class BatchItem:
    """One request of a bulk job and the key the journal knows it by."""

    key: str
    request: ImageRequest


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
    key = record.pop("id", None)
    if key is not None and (not isinstance(key, str | int) or isinstance(key, bool)):
        return LineError(line, f"id must be a string or integer (got {key!r})")
    try:
        request = converter.structure({**defaults, **record}, ImageRequest)
    except WorldRouterError as exc:
        return LineError(line, str(exc))
    return BatchItem(key=str(key) if key is not None else f"line-{line}", request=request)


def read_jsonl(
    path: Path, *, defaults: Mapping[str, Any] | None = None
) -> tuple[list[BatchItem], list[LineError]]:
    """Every request in `path` plus the lines that failed, each with its line number.

    Lines without an ``id`` are keyed by line number, so keep the file unchanged between a
    run and its resume (or give every line an ``id``).
    """
    items: list[BatchItem] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            parsed = parse_line(text, line=number, defaults=defaults or {})
            if isinstance(parsed, BatchItem) and parsed.key in seen:
                parsed = LineError(number, f"id {parsed.key!r} repeats line {seen[parsed.key]}")
            if isinstance(parsed, BatchItem):
                seen[parsed.key] = number
                items.append(parsed)
                warn_ignored_in_file(parsed.request, filename=str(path), lineno=number)
            elif parsed is not None:
                errors.append(parsed)
    return items, errors


def items_from_requests(requests: Iterable[ImageRequest | BatchItem]) -> list[BatchItem]:
    """Key plain requests by position (``item-N``), keeping `BatchItem` keys as given."""
    return [
        r if isinstance(r, BatchItem) else BatchItem(key=f"item-{i}", request=r)
        for i, r in enumerate(requests, start=1)
    ]
