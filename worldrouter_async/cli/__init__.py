"""The ``worldrouter-async`` command line: generate, wait, batch, status, gallery, emulator, demo.

Exit codes: 0 when every request succeeded, 1 when some failed (or the network, the server
or the disk did), 2 for usage errors, 130 when interrupted. No failure prints a traceback
unless ``--debug`` asks for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shlex
import signal
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from .. import __version__
from .._config import Limits, PollPolicy, RetryPolicy
from .._errors import WorldRouterError
from .._session import Session
from ..batch import (
    BatchItem,
    BatchRunner,
    JournalError,
    LineError,
    OutcomeKind,
    iter_jsonl,
    read_jsonl,
)
from ..batch._jsonl import BOM
from ..testing import Emulator
from ._dryrun import check_file, dry_run_record, print_dry_run
from ._errors import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    UsageError,
    in_cli_terms,
    is_usage_error,
    one_line,
    report,
)
from ._gallery import add_gallery_parser, run_gallery
from ._json import batch_record, emit, outcome_record, task_record
from ._progress import make_reporter
from ._single import check_out_dir, save_images, wait_command
from ._status import journal_path, print_status, read_status, status_record
from ._warnings import plain_warnings

EXIT_TERMINATED: Final = 143  # 128 + SIGTERM, as shells report a process ended by it
#: The model `generate` and `batch` use when neither ``--model`` nor a JSONL line names one.
DEFAULT_MODEL: Final = "gpt-image-2"
#: Commands whose rerun picks up where an interrupted run stopped.
RESUMABLE_COMMANDS: Final = frozenset({"batch", "demo"})

DEMO_SUBJECTS: Final = (
    "a lighthouse at dusk",
    "a paper crane",
    "a red kite over hills",
    "a bowl of lemons",
    "a fox in snow",
    "a tram in the rain",
    "a cactus in a clay pot",
    "a sailboat at dawn",
    "a stack of old books",
    "a hot-air balloon",
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except where there is none to show (None, a flag off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose subcommands show their defaults too."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**options)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--api-key", help="API key (default: $WORLDROUTER_API_KEY)")
    group.add_argument("--base-url", help="API base URL (default: $WORLDROUTER_BASE_URL)")
    group.add_argument("--insecure", action="store_true", help="allow plain http:// to any host")
    group.add_argument(
        "--proxy",
        metavar="URL",
        help="proxy for API calls and downloads, such as http://proxy.example:3128 "
        "(default: $HTTPS_PROXY / $HTTP_PROXY, except hosts in $NO_PROXY)",
    )
    group.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="PATH",
        help="PEM file (or directory) of CA certificates to trust instead of the system's, "
        "for a private CA or a TLS-inspecting proxy (default: $SSL_CERT_FILE, else the system's)",
    )
    group.add_argument(
        "--poll-initial",
        type=float,
        default=PollPolicy().initial_delay,
        metavar="SECONDS",
        help="seconds before a task's first poll (default: %(default)s)",
    )
    group.add_argument(
        "--poll-max",
        type=float,
        default=PollPolicy().max_interval,
        metavar="SECONDS",
        help="longest wait between polls of one task (default: %(default)s)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="give up waiting for a task after this long (default: %(default)s)",
    )


def _add_request_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("request")
    group.add_argument("--model", default=DEFAULT_MODEL, help="image model")
    group.add_argument(
        "--size", help="WIDTHxHEIGHT or auto; gpt-image-2 only (default: the server's)"
    )
    group.add_argument(
        "--quality", help="quality tier, such as low, medium or high (default: the server's)"
    )
    group.add_argument(
        "--n", type=int, help="images per prompt, capped by the server (default: the server's)"
    )
    group.add_argument(
        "--output-format",
        choices=["png", "jpeg", "jpg", "webp"],
        help="image file format (default: the server's)",
    )


def _request_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("model", "size", "quality", "n", "output_format")
    return {name: value for name in names if (value := getattr(args, name)) is not None}


def _add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} as one JSON object on stdout (schema in docs/cli.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="worldrouter-async",
        description="Generate images with WorldRouter's async image tasks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate one prompt and save its images")
    generate.add_argument("prompt", help="what to draw")
    generate.add_argument("--out", type=Path, default=Path("."), help="directory for the images")
    _add_json_option(generate, "the task and its files")
    _add_request_options(generate)
    _add_connection_options(generate)

    wait = commands.add_parser("wait", help="wait for a task created earlier and save its images")
    wait.add_argument("task_id", metavar="TASK_ID", help="the task's ID, as generate printed it")
    wait.add_argument("--out", type=Path, default=Path("."), help="directory for the images")
    _add_json_option(wait, "the task and its files")
    _add_connection_options(wait)

    batch = commands.add_parser("batch", help="run a JSONL file of prompts, resumably")
    batch.add_argument("prompts", type=Path, help='JSON Lines: one {"prompt": ...} per line')
    batch.add_argument("--out", type=Path, help="directory for the images (required to run)")
    batch.add_argument("--journal", type=Path, help="journal file (default: OUT/journal.sqlite3)")
    batch.add_argument(
        "--concurrency",
        type=int,
        default=Limits().max_concurrent_creates,
        help="creates in flight at once",
    )
    batch.add_argument("--plain", action="store_true", help="log lines instead of a live bar")
    batch.add_argument(
        "--dry-run",
        action="store_true",
        help="read and check the whole file, count the requests per model, list ignored"
        " parameters and invalid lines; send nothing (needs no --out or API key)",
    )
    _add_json_option(batch, "the summary (progress lines go to stderr)")
    batch.add_argument(
        "--json-events",
        action="store_true",
        help="print one JSON object per finished line, then the summary, on stdout",
    )
    batch.add_argument(
        "--retry-ambiguous",
        action="store_true",
        help="resend creates that may have reached the server, with the same Idempotency-Key;"
        " only if your server deduplicates creates by that key (else each pays twice)",
    )
    batch.add_argument(
        "--new-journal",
        action="store_true",
        help="start a new journal even though --out already holds images (their requests"
        " are then created, and paid for, again)",
    )
    _add_request_options(batch)
    _add_connection_options(batch)

    status = commands.add_parser("status", help="show the counts and failures in a journal")
    status.add_argument(
        "journal",
        type=Path,
        help="the journal of a batch run, or the --out directory that holds its journal.sqlite3",
    )
    _add_json_option(status, "the counts, usage, invalid lines and failures")

    add_gallery_parser(commands)

    emulator = commands.add_parser("emulator", help="serve the WorldRouter emulator")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emulator.add_argument("--port", type=int, default=8080, help="API port (0 picks a free one)")
    emulator.add_argument(
        "--storage-port", type=int, default=0, help="image storage port (0 picks a free one)"
    )
    emulator.add_argument("--api-key", default="test-key", help="the key it accepts")
    emulator.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies every generation time (0.01 makes a 25 s task take 0.25 s)",
    )
    emulator.add_argument(
        "--seed", type=int, default=0, help="seed of the random faults and durations"
    )
    emulator.add_argument(
        "--fail-rate", type=float, default=0.0, help="probability of a 5xx answer per request"
    )
    emulator.add_argument(
        "--drop-rate", type=float, default=0.0, help="probability of a dropped connection"
    )
    emulator.add_argument(
        "--rate-limit", type=float, help="requests per second before 429 (default: unlimited)"
    )
    emulator.add_argument("--burst", type=float, default=10.0, help="rate-limit bucket depth")
    emulator.add_argument(
        "--ignore-idempotency",
        action="store_true",
        help="play a server that ignores Idempotency-Key (a resent create is a new paid task)",
    )

    demo = commands.add_parser("demo", help="run a bulk job against an in-process emulator")
    demo.add_argument("--count", type=int, default=100, help="how many prompts")
    demo.add_argument("--out", type=Path, default=Path("worldrouter-demo"), help="output folder")
    demo.add_argument("--plain", action="store_true", help="log lines instead of a live bar")

    for command in commands.choices.values():  # also accepted after the command's name
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _session(args: argparse.Namespace, **overrides: Any) -> Session:
    if args.poll_initial <= 0 or args.poll_max <= 0:
        raise UsageError("--poll-initial and --poll-max must be positive")
    options: dict[str, Any] = {
        "api_key": args.api_key,
        "base_url": args.base_url,
        "allow_insecure": args.insecure,
        "task_timeout": args.timeout,
        "poll": PollPolicy(initial_delay=args.poll_initial, max_interval=args.poll_max),
        "proxy": args.proxy,
        "verify": True if args.ca_bundle is None else args.ca_bundle,
    }
    options.update(overrides)
    return Session(**options)


async def _generate(args: argparse.Namespace) -> int:
    await check_out_dir(args.out)  # before the create: a task is paid for once it exists
    async with _session(args) as session:
        try:
            handle = await session.submit(prompt=args.prompt, **_request_params(args))
        except WorldRouterError as exc:  # refused or unanswered: no task exists
            if args.json and not is_usage_error(exc):
                emit(task_record(None, error=one_line(exc)))
            raise
        heading = (
            f"task {handle.task_id} created; if this stops, fetch it with: "
            f"{wait_command(handle.task_id or '', args.out)}"
        )
        await save_images(session, handle, args.out, heading=heading, json_output=args.json)
    return EXIT_OK


async def _wait(args: argparse.Namespace) -> int:
    await check_out_dir(args.out)
    async with _session(args) as session:
        handle = session.track(args.task_id)
        heading = f"waiting for task {args.task_id}"
        await save_images(session, handle, args.out, heading=heading, json_output=args.json)
    return EXIT_OK


async def _run_batch(
    session: Session,
    items: Iterable[BatchItem | LineError],
    *,
    total: int,
    out: Path,
    journal: Path,
    concurrency: int,
    plain: bool,
    new_journal: bool = False,
    json_output: str | None = None,
) -> BatchRunner:
    """Run `items`, showing progress; with `json_output` ("summary" or "events") stdout
    carries only JSON and the human lines go to stderr."""
    reporter = make_reporter(
        total, plain=plain, stats=lambda: session.stats, stream=sys.stderr if json_output else None
    )
    async with (
        reporter,
        BatchRunner(
            session, journal, out_dir=out, concurrency=concurrency, new_journal=new_journal
        ) as runner,
    ):
        async for outcome in runner.run(items):
            reporter.outcome(outcome)
            if json_output == "events":
                emit(outcome_record(outcome))
    reporter.summary(runner.summary, journal=str(journal))  # below the finished bar
    if json_output:
        stop = in_cli_terms(runner.stop_reason) if runner.stop_reason else None
        emit(batch_record(runner.summary, lines=total, journal=journal, out=out, stop_reason=stop))
    return runner


def _count_lines(path: Path) -> int:
    """Non-blank lines of `path`, for the progress bar's total (read without parsing)."""
    with path.open("rb") as file:
        first = file.readline().removeprefix(BOM.encode())  # as iter_jsonl reads it
        return sum(1 for line in itertools.chain([first], file) if line.strip())


def _report_stops(runner: BatchRunner, *, resend_command: str | None) -> None:
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


def _json_mode(args: argparse.Namespace) -> str | None:
    return "events" if args.json_events else "summary" if args.json else None


async def _batch(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {args.concurrency})")
    try:
        total = await asyncio.to_thread(_count_lines, args.prompts)
    except OSError as exc:
        raise UsageError(f"cannot read {args.prompts}: {exc.strerror or exc}") from exc
    if args.dry_run:
        return await _dry_run(args)
    if args.out is None:
        raise UsageError(
            "batch needs --out DIR, the directory for the images and the journal "
            "(or --dry-run to only check the file)"
        )
    await check_out_dir(args.out)
    journal = args.journal or args.out / "journal.sqlite3"
    task = asyncio.current_task()
    assert task is not None
    terminated = asyncio.Event()

    def on_sigterm() -> None:  # installed explicitly: as PID 1 no default handler exists
        terminated.set()
        task.cancel()

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # Windows: no loop signal handlers
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        async with _session(args, retry_ambiguous_creates=args.retry_ambiguous) as session:
            runner = await _run_batch(
                session,
                iter_jsonl(args.prompts, defaults=_request_params(args)),
                total=total,
                out=args.out,
                journal=journal,
                concurrency=args.concurrency,
                plain=args.plain,
                new_journal=args.new_journal,
                json_output=_json_mode(args),
            )
    except asyncio.CancelledError:
        if not terminated.is_set():
            raise
        task.uncancel()
        print("terminated; rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
    resend = shlex.join(["worldrouter-async", *args.argv, "--retry-ambiguous"])
    _report_stops(runner, resend_command=None if args.retry_ambiguous else resend)
    complete = runner.summary.total == total  # a stopped run leaves lines unread
    return EXIT_OK if runner.summary.ok and complete else EXIT_FAILED


async def _dry_run(args: argparse.Namespace) -> int:
    result = await asyncio.to_thread(check_file, args.prompts, defaults=_request_params(args))
    if args.json or args.json_events:
        emit(dry_run_record(args.prompts, result))
    else:
        print_dry_run(args.prompts, result)
    return EXIT_OK if result.ok else EXIT_FAILED


def _status(args: argparse.Namespace) -> int:
    journal = journal_path(args.journal)
    try:
        status = read_status(journal)
    except FileNotFoundError as exc:
        raise UsageError(
            f"no journal at {journal}; pass the journal.sqlite3 that batch wrote "
            "(or the --out directory that holds it)"
        ) from exc
    except (JournalError, sqlite3.DatabaseError) as exc:
        raise UsageError(
            f"{journal} is not a batch journal ({exc}); "
            "pass the journal.sqlite3 that batch wrote into its --out directory"
        ) from exc
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise UsageError(f"cannot read journal {journal}: {exc}") from exc
    if args.json:
        emit(status_record(journal, status))
    else:
        print_status(journal, status)
    return EXIT_OK if status.ok else EXIT_FAILED


async def _emulator(args: argparse.Namespace) -> int:
    emulator = Emulator(
        api_key=args.api_key,
        time_scale=args.time_scale,
        seed=args.seed,
        fail_rate=args.fail_rate,
        drop_rate=args.drop_rate,
        rate_limit=args.rate_limit,
        burst=args.burst,
        ignore_idempotency=args.ignore_idempotency,
        host=args.host,
        port=args.port,
        storage_port=args.storage_port,
        record_requests=False,
    )
    async with emulator:
        print(f"WorldRouter emulator at {emulator.base_url} (storage {emulator.storage_url})")
        print(f"export WORLDROUTER_BASE_URL={emulator.base_url} WORLDROUTER_API_KEY={args.api_key}")
        sys.stdout.flush()
        await asyncio.Event().wait()
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise UsageError(f"--count must be at least 1 (got {args.count})")
    await check_out_dir(args.out)
    prompts = args.out / "prompts.jsonl"
    models = ("gpt-image-2", "gemini-2.5-flash-image")
    with prompts.open("w", encoding="utf-8") as file:
        for i in range(args.count):
            subject = DEMO_SUBJECTS[i % len(DEMO_SUBJECTS)]
            record = {"id": f"demo-{i:04d}", "model": models[i % 2], "prompt": f"{subject}, #{i}"}
            file.write(json.dumps(record) + "\n")
    items, _ = read_jsonl(prompts)
    # 1/50 of real time: a 25 s generation takes half a second, so the bar has time to move.
    async with Emulator(time_scale=0.02, record_requests=False) as emulator:
        print(f"emulator at {emulator.base_url}; {args.count} prompts in {prompts}")
        async with Session(
            emulator.api_key,
            emulator.base_url,
            poll=PollPolicy(initial_delay=0.05, max_interval=0.2),
            retry=RetryPolicy(base=0.05, cap=1.0),
        ) as session:
            runner = await _run_batch(
                session,
                items,
                total=len(items),
                out=args.out / "images",
                journal=args.out / "journal.sqlite3",
                concurrency=32,
                plain=args.plain,
            )
    _report_stops(runner, resend_command=None)
    print(f"images in {args.out / 'images'}; look at them: {args.out / 'images' / 'index.html'}")
    return EXIT_OK if runner.summary.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print resume commands
    commands = {
        "generate": _generate,
        "wait": _wait,
        "batch": _batch,
        "emulator": _emulator,
        "demo": _demo,
    }
    with plain_warnings():
        try:
            if args.command == "status":
                return _status(args)
            if args.command == "gallery":
                return run_gallery(args)
            return asyncio.run(commands[args.command](args))
        except BaseException as exc:  # the edge: every failure becomes one line and a code
            return report(exc, debug=args.debug, resumable=args.command in RESUMABLE_COMMANDS)
