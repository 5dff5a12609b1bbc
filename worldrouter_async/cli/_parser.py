"""The command line's flags and help: one argument parser for every subcommand.

Every flag, its default and its help text live here, so ``--help`` reads the same as the
code and a new option is added in one place. The commands read the parsed namespace.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final

from .. import __version__
from .._config import Limits, PollPolicy
from ..batch import INDEX_NAME, MANIFEST_NAME, is_bucket

#: The model `generate` and `batch` use when neither ``--model`` nor a JSONL line names one.
DEFAULT_MODEL: Final = "gpt-image-2"


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


def out_location(value: str) -> Path | str:
    """``--out`` of ``batch``: an ``s3://`` URL stays a string (a Path would fold its ``//``)."""
    return value if is_bucket(value) else Path(value)


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
        "--requests-per-second",
        type=float,
        metavar="R",
        help="send at most R requests (creates and polls together) a second, to stay under "
        "the account's rate limit instead of meeting 429s; with N workers on one job give "
        "each R/N (default: no pacing)",
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


def _add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} as one JSON object on stdout (schema in docs/cli.md)",
    )


def _add_single_parsers(commands: argparse._SubParsersAction[Any]) -> None:
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


def _add_batch_parser(commands: argparse._SubParsersAction[Any]) -> None:
    batch = commands.add_parser("batch", help="run a JSONL file of prompts, resumably")
    batch.add_argument("prompts", type=Path, help='JSON Lines: one {"prompt": ...} per line')
    batch.add_argument(
        "--out",
        type=out_location,
        help="directory for the images, or a bucket prefix s3://BUCKET/PREFIX (required to run)",
    )
    batch.add_argument(
        "--journal",
        metavar="PATH_OR_URL",
        help="journal file (default: OUT/journal.sqlite3; required with an s3:// --out), or"
        " postgresql://USER@HOST:PORT/DB for a job that several workers run at once",
    )
    batch.add_argument(
        "--job",
        metavar="NAME",
        help="the job's name in a postgresql:// journal; every worker of a job passes the same"
        " (default: the input file's name without its extension)",
    )
    batch.add_argument(
        "--worker-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with a postgresql:// journal: how long a silent worker keeps its rows before"
        " the other workers take them over (a killed worker loses them at once)",
    )
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


def _add_journal_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    status = commands.add_parser("status", help="show the counts and failures in a journal")
    status.add_argument(
        "journal",
        type=Path,
        nargs="?",
        help="the journal of a batch run, or the --out directory that holds its journal.sqlite3",
    )
    status.add_argument(
        "--journal",
        dest="journal_location",
        metavar="PATH_OR_URL",
        help="the journal, as batch's --journal named it (a file, or postgresql://...)",
    )
    status.add_argument("--job", metavar="NAME", help="the job in a postgresql:// journal")
    _add_json_option(status, "the counts, usage, invalid lines and failures")

    gallery = commands.add_parser(
        "gallery",
        help=f"rebuild OUT/{MANIFEST_NAME} and OUT/{INDEX_NAME} (a contact sheet) from a journal",
    )
    gallery.add_argument("out", type=out_location, help="the --out directory of a batch run")
    gallery.add_argument(
        "--journal", type=Path, help="the run's journal (default: OUT/journal.sqlite3)"
    )


def _add_emulator_parsers(commands: argparse._SubParsersAction[Any]) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="worldrouter-async",
        description="Generate images with WorldRouter's async image tasks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_single_parsers(commands)
    _add_batch_parser(commands)
    _add_journal_parsers(commands)
    _add_emulator_parsers(commands)
    for command in commands.choices.values():  # also accepted after the command's name
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser
