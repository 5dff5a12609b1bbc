"""``batch --dry-run``: read and check a whole JSONL file, and say what a run would send.

Nothing is sent and nothing is written (no journal, no ``--out``), so a file can be checked,
and its cost estimated from the request count per model, before a run pays for anything.
"""

from __future__ import annotations

import argparse
import asyncio
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import define, field

from .._support import ignored_parameters
from ..batch import BatchItem, InvalidLine, iter_jsonl, mark_repeats
from ._errors import EXIT_FAILED, EXIT_OK
from ._json import Record, emit, invalid_records
from ._session_options import request_params


@define(frozen=True)
class Ignored:
    """A line whose model ignores parameters it sets."""

    line: int
    key: str
    model: str
    parameters: tuple[str, ...]


@define(frozen=True)
class DryRun:
    """What a run of a JSONL file would send, and which lines it would refuse."""

    lines: int = 0
    models: Counter[str] = field(factory=Counter)
    ignored: list[Ignored] = field(factory=list)
    invalid: list[InvalidLine] = field(factory=list)

    @property
    def requests(self) -> int:
        """The requests a run would create (each billed once)."""
        return self.models.total()

    @property
    def ok(self) -> bool:
        """True when every line would be sent."""
        return not self.invalid


def check_file(path: Path, *, defaults: Mapping[str, Any]) -> DryRun:
    """Read all of `path` as `batch` would, without sending anything."""
    lines = 0
    models: Counter[str] = Counter()
    ignored: list[Ignored] = []
    invalid: list[InvalidLine] = []
    with warnings.catch_warnings():  # ignored parameters are listed in the report instead
        warnings.simplefilter("ignore")
        for entry in mark_repeats(iter_jsonl(path, defaults=defaults)):
            lines += 1
            if not isinstance(entry, BatchItem):
                invalid.append(InvalidLine(entry.line, f"line-{entry.line}", entry.message))
                continue
            models[entry.request.model] += 1
            if parameters := ignored_parameters(entry.request):
                ignored.append(Ignored(entry.line, entry.key, entry.request.model, parameters))
    return DryRun(lines, models, ignored, invalid)


def dry_run_record(path: Path, result: DryRun) -> Record:
    """`batch --dry-run --json`."""
    return {
        "dry_run": True,
        "ok": result.ok,
        "input": str(path),
        "lines": result.lines,
        "requests": result.requests,
        "models": dict(sorted(result.models.items())),
        "ignored": [
            {"line": i.line, "id": i.key, "model": i.model, "parameters": list(i.parameters)}
            for i in result.ignored
        ],
        "invalid_lines": invalid_records(result.invalid),
    }


def print_dry_run(path: Path, result: DryRun) -> None:
    """`batch --dry-run`, for people."""
    print(
        f"{path}: {result.lines} lines; a run would send {result.requests} requests "
        f"and refuse {len(result.invalid)} invalid lines (dry run: nothing sent)"
    )
    for model, count in sorted(result.models.items()):
        print(f"  {model:<28} {count}")
    for ignored in result.ignored:
        print(
            f"  line {ignored.line}: {ignored.model} ignores {', '.join(ignored.parameters)}"
            " (the task runs without it)"
        )
    for line in result.invalid:
        print(f"  line {line.line} invalid: {line.reason}")


async def run_dry_run(args: argparse.Namespace) -> int:
    """``batch --dry-run``: check ``args.prompts`` and report; exit 1 when a line is invalid."""
    result = await asyncio.to_thread(check_file, args.prompts, defaults=request_params(args))
    if args.json or args.json_events:
        emit(dry_run_record(args.prompts, result))
    else:
        print_dry_run(args.prompts, result)
    return EXIT_OK if result.ok else EXIT_FAILED
