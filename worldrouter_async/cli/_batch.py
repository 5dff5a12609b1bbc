"""``batch``: run a JSONL file of prompts through a journaled, resumable `BatchRunner`.

Progress goes to a live bar or log lines; with ``--json`` or ``--json-events`` stdout carries
only JSON. A stopped run says why and how to resume, SIGTERM ends it as resumable (exit 143),
and ``--dry-run`` hands over to `run_dry_run` before anything is opened. `run_with_progress`
is shared with ``demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import itertools
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

from .._session import Session
from ..batch import (
    BatchItem,
    BatchRunner,
    BatchSummary,
    LineError,
    OutcomeKind,
    check_bucket,
    is_bucket,
    iter_jsonl,
)
from ..batch.journal import is_postgres_url, redact
from ._dryrun import run_dry_run
from ._errors import EXIT_FAILED, EXIT_OK, PROG, UsageError, in_cli_terms
from ._json import batch_record, emit, outcome_record
from ._progress import make_reporter
from ._session_options import request_params, session_from_flags
from ._signals import EXIT_TERMINATED, Terminated, sigterm_stops
from ._single import check_out_dir


async def run_with_progress(
    session: Session,
    items: Iterable[BatchItem | LineError],
    *,
    total: int,
    out: Path | str,
    journal: Path | str,
    concurrency: int,
    plain: bool,
    new_journal: bool = False,
    json_output: str | None = None,
    job: str | None = None,
    worker_timeout: float = 30.0,
) -> BatchRunner:
    """Run `items`, showing progress; with `json_output` ("summary" or "events") stdout
    carries only JSON and the human lines go to stderr. A ``postgresql://`` `journal` is
    shared with the other workers of `job`."""
    reporter = make_reporter(
        total, plain=plain, stats=lambda: session.stats, stream=sys.stderr if json_output else None
    )
    async with (
        reporter,
        BatchRunner(
            session,
            journal,
            out_dir=out,
            concurrency=concurrency,
            new_journal=new_journal,
            job=job,
            worker_timeout=worker_timeout,
        ) as runner,
    ):
        async for outcome in runner.run(items):
            reporter.outcome(outcome)
            if json_output == "events":
                emit(outcome_record(outcome))
    name = f"{redact(journal)} job {job}" if isinstance(journal, str) else str(journal)
    reporter.summary(runner.summary, journal=name)  # below the finished bar
    if json_output:
        stop = in_cli_terms(runner.stop_reason) if runner.stop_reason else None
        emit(batch_record(runner.summary, lines=total, journal=name, out=out, stop_reason=stop))
    return runner


def nothing_left(summary: BatchSummary, *, retry_ambiguous: bool) -> bool:
    """True when a shared job holds nothing a worker could still do for the lines reported:
    each is completed, failed or expired for good, invalid, or ambiguous and not to resend."""
    settled = {OutcomeKind.COMPLETED, OutcomeKind.FAILED, OutcomeKind.EXPIRED, OutcomeKind.INVALID}
    if not retry_ambiguous:
        settled.add(OutcomeKind.AMBIGUOUS)
    return summary.counts.keys() <= settled


def report_stops(runner: BatchRunner, *, resend_command: str | None) -> None:
    """One line for a stopped run, and the command that resends ambiguous creates."""
    if runner.stop_reason is not None:
        print(f"{PROG}: {in_cli_terms(runner.stop_reason)}; rerun to resume", file=sys.stderr)
    ambiguous = runner.summary.counts.get(OutcomeKind.AMBIGUOUS, 0)
    if ambiguous and resend_command is not None:
        print(
            f"worldrouter-async: {ambiguous} request(s) may already have been created (their "
            "create got no answer) and were not resent. Only if your server deduplicates "
            f"creates by Idempotency-Key, resend them with:\n  {resend_command}",
            file=sys.stderr,
        )


def _count_lines(path: Path) -> int:
    """Non-blank lines of `path`, for the progress bar's total (read without parsing)."""
    with path.open("rb") as file:
        first = file.readline().removeprefix(codecs.BOM_UTF8)  # as iter_jsonl reads it
        return sum(1 for line in itertools.chain([first], file) if line.strip())


def _json_mode(args: argparse.Namespace) -> str | None:
    return "events" if args.json_events else "summary" if args.json else None


async def _check_bucket(args: argparse.Namespace) -> None:
    """Refuse an ``s3://`` ``--out`` that cannot work, before anything is paid for."""
    if args.journal is None:
        raise UsageError(
            f"--out {args.out} is a bucket, and the journal cannot be kept there: pass "
            "--journal PATH (keep that file: a rerun with it resumes the job), or "
            "--journal postgresql://... for a job that several workers share"
        )
    try:
        await check_bucket(args.out)
    except ModuleNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(
            f"cannot write images to --out {args.out}: {exc}; check the bucket name and the "
            "AWS_* environment (credentials, AWS_ENDPOINT_URL)"
        ) from None


async def run_batch(args: argparse.Namespace) -> int:
    """``batch``: run (or with ``--dry-run`` only check) ``args.prompts``; exit 1 unless
    every line succeeded."""
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {args.concurrency})")
    try:
        total = await asyncio.to_thread(_count_lines, args.prompts)
    except OSError as exc:
        raise UsageError(f"cannot read {args.prompts}: {exc.strerror or exc}") from exc
    if args.dry_run:
        return await run_dry_run(args)
    if args.out is None:
        raise UsageError(
            "batch needs --out DIR, the directory for the images and the journal "
            "(or --dry-run to only check the file)"
        )
    if is_bucket(args.out):
        await _check_bucket(args)
    else:
        await check_out_dir(args.out)
    if args.worker_timeout <= 0:
        raise UsageError(f"--worker-timeout must be more than 0 (got {args.worker_timeout})")
    if is_postgres_url(args.journal):
        journal: Path | str = args.journal
    else:
        journal = Path(args.journal) if args.journal else args.out / "journal.sqlite3"
    try:
        with sigterm_stops():
            async with session_from_flags(
                args, retry_ambiguous_creates=args.retry_ambiguous
            ) as session:
                runner = await run_with_progress(
                    session,
                    iter_jsonl(args.prompts, defaults=request_params(args)),
                    total=total,
                    out=args.out,
                    journal=journal,
                    concurrency=args.concurrency,
                    plain=args.plain,
                    new_journal=args.new_journal,
                    json_output=_json_mode(args),
                    job=args.job or args.prompts.stem,
                    worker_timeout=args.worker_timeout,
                )
    except Terminated:
        print("terminated; rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED
    resend = shlex.join(["worldrouter-async", *args.argv, "--retry-ambiguous"])
    report_stops(runner, resend_command=None if args.retry_ambiguous else resend)
    complete = runner.summary.total == total  # a stopped run leaves lines unread
    if is_postgres_url(journal):  # one worker of many: done when nothing is left to do
        done = nothing_left(runner.summary, retry_ambiguous=args.retry_ambiguous)
        return EXIT_OK if done and complete else EXIT_FAILED
    return EXIT_OK if runner.summary.ok and complete else EXIT_FAILED
