"""The ``worldrouter-async`` command line: generate, wait, batch, status, gallery, emulator, demo.

Exit codes: 0 when every request succeeded, 1 when some failed (or the network, the server
or the disk did), 2 for usage errors, 130 when interrupted. No failure prints a traceback
unless ``--debug`` asks for it.

This module is the exit edge: it parses the flags (`_parser`), runs one command (a module per
command family) and turns every failure into one line and a code (`_errors`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from ._batch import run_batch
from ._emulator import run_demo, run_emulator
from ._errors import report
from ._gallery import run_gallery
from ._parser import build_parser
from ._single import run_generate, run_wait
from ._status import run_status
from ._warnings import plain_warnings

#: Commands whose rerun picks up where an interrupted run stopped.
RESUMABLE_COMMANDS: Final = frozenset({"batch", "demo"})

_Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
_ASYNC_COMMANDS: Final[dict[str, _Command]] = {
    "generate": run_generate,
    "wait": run_wait,
    "batch": run_batch,
    "emulator": run_emulator,
    "demo": run_demo,
}
_SYNC_COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "status": run_status,
    "gallery": run_gallery,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print resume commands
    with plain_warnings():
        try:
            if args.command in _SYNC_COMMANDS:
                return _SYNC_COMMANDS[args.command](args)
            return asyncio.run(_ASYNC_COMMANDS[args.command](args))
        except BaseException as exc:  # the edge: every failure becomes one line and a code
            return report(exc, debug=args.debug, resumable=args.command in RESUMABLE_COMMANDS)
