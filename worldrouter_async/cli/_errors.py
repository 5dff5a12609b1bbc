"""The command line's one exception boundary: every failure becomes one line and an exit code.

Task groups wrap failures in exception groups; the edge unwraps them to the first leaf that
says what went wrong, words it for a command-line user (flags, not Python arguments) and
picks the exit code. ``--debug`` prints the full traceback as well.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import traceback
from typing import Final

from .._errors import (
    ConfigurationError,
    InvalidRequestError,
    SessionClosedError,
    TaskCancelledError,
    TaskTimeoutError,
    WorldRouterError,
    first_leaf,
)
from ..batch import JournalInUseError, JournalLostError, OutputClaimedError

PROG: Final = "worldrouter-async"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

#: Python spellings in library messages and the flag a command-line user types instead.
CLI_SPELLINGS: Final = (
    ("pass Session(api_key=...)", "pass --api-key"),
    ("pass the API key as api_key=", "pass the key with --api-key"),
    ("pass allow_insecure=True", "pass --insecure"),
    ("base_url", "--base-url"),
    ("task_timeout", "--timeout"),
    ("in proxy= or HTTPS_PROXY", "in --proxy or HTTPS_PROXY"),
    ("Session(verify='/path/to/ca.pem') (CLI: --ca-bundle)", "--ca-bundle /path/to/ca.pem"),
    ("new_journal=True (CLI: --new-journal)", "--new-journal"),
    ("retry_ambiguous_creates=True", "--retry-ambiguous"),
    ("another output directory (CLI: another --out)", "another --out"),
)


#: An API error's fields as Python writes them (``code='invalid_api_key'``).
_QUOTED_FIELD: Final = re.compile(r"\b(code|request_id)='([^']*)'")


class UsageError(Exception):
    """A user mistake reported in plain words with exit code 2 (no traceback)."""


def in_cli_terms(message: str) -> str:
    """`message` with the library's Python argument names replaced by the CLI's flags."""
    for python, flag in CLI_SPELLINGS:
        message = message.replace(python, flag)
    return _QUOTED_FIELD.sub(r"\1 \2", message)


def _describe(error: BaseException, *, resumable: bool) -> tuple[int, str]:
    """The exit code and the one-line message (without the program name) for `error`."""
    match error:
        case KeyboardInterrupt():
            return EXIT_INTERRUPTED, "interrupted" + (
                "; rerun the same command to resume" if resumable else ""
            )
        case (
            UsageError()
            | ConfigurationError()
            | InvalidRequestError()
            | JournalInUseError()
            | JournalLostError()
            | OutputClaimedError()
        ):
            return EXIT_USAGE, f"error: {in_cli_terms(str(error))}"
        case TaskTimeoutError():
            return EXIT_FAILED, (
                f"task {error.task_id} did not finish within --timeout; it may still complete"
            )
        case SessionClosedError() | TaskCancelledError():
            return EXIT_FAILED, f"stopped waiting for task {error.task_id}; it may still complete"
        case WorldRouterError():
            return EXIT_FAILED, f"{type(error).__name__}: {in_cli_terms(str(error))}"
        case UnicodeDecodeError():
            return EXIT_USAGE, f"error: the input is not UTF-8 text ({error.reason})"
        case sqlite3.Error():
            return EXIT_USAGE, f"error: the journal cannot be used ({error}); check --journal"
        case OSError(filename=str() as filename) if error.strerror:
            return EXIT_FAILED, f"error: {filename}: {error.strerror}"
        case OSError():
            return EXIT_FAILED, f"error: {error.strerror or error}"
        case _:
            return EXIT_FAILED, (
                f"internal error: {type(error).__name__}: {error} "
                "(rerun with --debug for the traceback, and please report it)"
            )


def one_line(error: BaseException) -> str:
    """The message `report` prints for `error`, without the program name (for ``--json``)."""
    leaf = first_leaf(error)
    cancelled = isinstance(leaf, asyncio.CancelledError) or (
        isinstance(leaf, BaseExceptionGroup) and leaf.split(asyncio.CancelledError)[1] is None
    )
    return "interrupted" if cancelled else _describe(leaf, resumable=False)[1]


def is_usage_error(error: BaseException) -> bool:
    """True when `error` is the user's mistake (exit code 2), which ``--json`` leaves to stderr."""
    return _describe(first_leaf(error), resumable=False)[0] == EXIT_USAGE


def report(error: BaseException, *, debug: bool, resumable: bool = False) -> int:
    """Print `error` as one line on stderr (after its traceback with `debug`); its exit code."""
    if debug:
        traceback.print_exception(error)
    code, message = _describe(first_leaf(error), resumable=resumable)
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
