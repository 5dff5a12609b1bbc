"""What ``--json`` prints: one object per command (and per outcome with ``--json-events``).

The shapes are a stable interface for scripts, documented as JSON Schemas in docs/cli.md
(a test checks real output against them): fields are only ever added, never renamed or
removed. Every record is one line of JSON on stdout; messages and progress go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._handles import ImageResult, TaskHandle
from ..batch import BatchSummary, InvalidLine, Outcome
from ..models import Usage
from ._errors import in_cli_terms

Record = dict[str, Any]


def emit(record: Mapping[str, Any]) -> None:
    """Print `record` as one line of JSON on stdout, flushed so a reader sees it at once."""
    print(json.dumps(record, ensure_ascii=False), flush=True)


def usage_record(usage: Usage | None) -> Record | None:
    """Token usage as an object, or None when the server reported none."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def task_record(
    handle: TaskHandle | None,
    *,
    result: ImageResult | None = None,
    files: Sequence[Path] = (),
    error: str | None = None,
) -> Record:
    """`generate` and `wait`: the task, its saved files, and the error that stopped it if any.

    `handle` is None when the create failed, so no task exists.
    """
    return {
        "ok": error is None,
        "task_id": handle.task_id if handle is not None else None,
        "status": result.task.status if result is not None else handle and handle.status,
        "model": result.model if result is not None else None,
        "files": [str(path) for path in files],
        "urls": list(result.urls) if result is not None else [],
        "usage": usage_record(result.usage if result is not None else None),
        "error": error,
    }


def outcome_record(outcome: Outcome) -> Record:
    """`batch --json-events`: one finished input line."""
    return {
        "event": "outcome",
        "id": outcome.key,
        "line": outcome.line,
        "kind": str(outcome.kind),
        "source": str(outcome.source),
        "task_id": outcome.task_id,
        "files": list(outcome.files),
        "urls": list(outcome.urls),
        "usage": usage_record(outcome.usage),
        "error": in_cli_terms(outcome.error) if outcome.error is not None else None,
    }


def batch_record(
    summary: BatchSummary,
    *,
    lines: int,
    journal: Path | str,
    out: Path | str,
    stop_reason: str | None,
) -> Record:
    """`batch --json` (and the last event of ``--json-events``): the run's accounting."""
    return {
        "event": "summary",
        "ok": summary.ok and lines == summary.total,
        "already_done": summary.already_done,
        "lines": lines,
        "not_read": max(lines - summary.total, 0),
        "counts": dict(sorted(summary.counts.items())),
        "sources": dict(sorted(summary.sources.items())),
        "usage": usage_record(summary.usage),
        "job_usage": usage_record(summary.job_usage),
        "wall_time": round(summary.wall_time, 3),
        "journal": str(journal),
        "out": str(out),
        "stop_reason": stop_reason,
    }


def invalid_records(lines: Iterable[InvalidLine]) -> list[Record]:
    """Invalid input lines: number (0 when not from a file), id and reason."""
    return [{"line": line.line, "id": line.key, "reason": line.reason} for line in lines]
