"""The ``worldrouter-async`` command line: generate, wait, batch, status, emulator and demo.

Exit codes: 0 when every request succeeded, 1 when some failed (or the network, the server
or the disk did), 2 for usage errors, 130 when interrupted. No failure prints a traceback
unless ``--debug`` asks for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .. import __version__
from .._config import Limits, PollPolicy, RetryPolicy
from .._session import Session
from ..batch import BatchItem, BatchRunner, BatchSummary, LineError, read_jsonl, read_rows
from ..testing import Emulator
from ._errors import EXIT_FAILED, EXIT_OK, UsageError, report
from ._progress import make_reporter
from ._single import check_out_dir, save_images
from ._warnings import plain_warnings

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
    _add_request_options(generate)
    _add_connection_options(generate)

    wait = commands.add_parser("wait", help="wait for a task created earlier and save its images")
    wait.add_argument("task_id", metavar="TASK_ID", help="the task's ID, as generate printed it")
    wait.add_argument("--out", type=Path, default=Path("."), help="directory for the images")
    _add_connection_options(wait)

    batch = commands.add_parser("batch", help="run a JSONL file of prompts, resumably")
    batch.add_argument("prompts", type=Path, help="JSON Lines: one {'prompt': ...} per line")
    batch.add_argument("--out", type=Path, required=True, help="directory for the images")
    batch.add_argument("--journal", type=Path, help="journal file (default: OUT/journal.sqlite3)")
    batch.add_argument(
        "--concurrency",
        type=int,
        default=Limits().max_concurrent_creates,
        help="creates in flight at once",
    )
    batch.add_argument("--plain", action="store_true", help="log lines instead of a live bar")
    _add_request_options(batch)
    _add_connection_options(batch)

    status = commands.add_parser("status", help="show the counts and failures in a journal")
    status.add_argument(
        "journal", type=Path, help="the journal of a batch run (by default OUT/journal.sqlite3)"
    )

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
    }
    options.update(overrides)
    return Session(**options)


async def _generate(args: argparse.Namespace) -> int:
    await check_out_dir(args.out)  # before the create: a task is paid for once it exists
    async with _session(args) as session:
        handle = await session.submit(prompt=args.prompt, **_request_params(args))
        await save_images(session, handle, args.out)
    return EXIT_OK


async def _wait(args: argparse.Namespace) -> int:
    await check_out_dir(args.out)
    async with _session(args) as session:
        await save_images(session, session.track(args.task_id), args.out)
    return EXIT_OK


def _print_line_errors(errors: Sequence[LineError], source: Path) -> None:
    for error in errors:
        print(f"{source}: {error}", file=sys.stderr)


async def _run_batch(
    session: Session,
    items: list[BatchItem],
    *,
    out: Path,
    journal: Path,
    concurrency: int,
    plain: bool,
) -> BatchSummary:
    reporter = make_reporter(len(items), plain=plain, stats=lambda: session.stats)
    async with (
        reporter,
        BatchRunner(session, journal, out_dir=out, concurrency=concurrency) as runner,
    ):
        async for outcome in runner.run(items):
            reporter.outcome(outcome)
    reporter.summary(runner.summary, journal=str(journal))  # below the finished bar
    return runner.summary


async def _batch(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {args.concurrency})")
    try:
        items, errors = read_jsonl(args.prompts, defaults=_request_params(args))
    except OSError as exc:
        raise UsageError(f"cannot read {args.prompts}: {exc.strerror or exc}") from exc
    _print_line_errors(errors, args.prompts)
    await check_out_dir(args.out)
    journal = args.journal or args.out / "journal.sqlite3"
    journal.parent.mkdir(parents=True, exist_ok=True)
    async with _session(args) as session:
        summary = await _run_batch(
            session,
            items,
            out=args.out,
            journal=journal,
            concurrency=args.concurrency,
            plain=args.plain,
        )
    return EXIT_OK if summary.ok and not errors else EXIT_FAILED


def _status(args: argparse.Namespace) -> int:
    try:
        rows = read_rows(args.journal)
    except sqlite3.DatabaseError as exc:
        raise UsageError(
            f"{args.journal} is not a batch journal ({exc}); "
            "pass the journal.sqlite3 that batch wrote into its --out directory"
        ) from exc
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise UsageError(f"cannot read journal {args.journal}: {exc}") from exc
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    print(f"{args.journal}: {len(rows)} requests")
    for state, count in sorted(counts.items()):
        print(f"  {state:<11} {count}")
    problems = [row for row in rows if row.error and row.state != "completed"]
    for row in problems:
        print(f"  {row.key} ({row.state}, task {row.task_id}): {row.error}")
    return EXIT_OK if counts.keys() <= {"completed"} else EXIT_FAILED


async def _emulator(args: argparse.Namespace) -> int:
    emulator = Emulator(
        api_key=args.api_key,
        time_scale=args.time_scale,
        seed=args.seed,
        fail_rate=args.fail_rate,
        drop_rate=args.drop_rate,
        rate_limit=args.rate_limit,
        burst=args.burst,
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
            summary = await _run_batch(
                session,
                items,
                out=args.out / "images",
                journal=args.out / "journal.sqlite3",
                concurrency=32,
                plain=args.plain,
            )
    print(f"images in {args.out / 'images'}")
    return EXIT_OK if summary.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
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
            return asyncio.run(commands[args.command](args))
        except BaseException as exc:  # the edge: every failure becomes one line and a code
            return report(exc, debug=args.debug, resumable=args.command in RESUMABLE_COMMANDS)
