"""Ctrl-C while the command line is still starting: one line on stderr, never a traceback.

Importing the SDK (aiohttp, attrs, cattrs) takes a moment before the command line's own
exception edge runs, and an interrupt then would show a traceback. When, and only when, this
process was started as the command line (``python -m worldrouter_async`` or the
``worldrouter-async`` script), an uncaught `KeyboardInterrupt` is reported as one line.
Any other program importing the SDK keeps its own hooks.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


def started_as_cli(argv: Sequence[str]) -> bool:
    """True when `argv` (the interpreter's own, `sys.orig_argv`) runs the command line."""
    if list(argv[1:3]) == ["-m", "worldrouter_async"]:
        return True
    return len(argv) > 1 and Path(argv[1]).stem == "worldrouter-async"


def quiet_interrupts_when_cli() -> None:
    """In the command line's process, report an uncaught Ctrl-C as one line (exit 130)."""
    if not started_as_cli(sys.orig_argv):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("worldrouter-async: interrupted", file=sys.stderr)
        else:
            previous(kind, error, tb)

    sys.excepthook = hook


quiet_interrupts_when_cli()
