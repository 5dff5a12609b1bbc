"""Warnings on the command line: one plain line each, naming an input line where there is one."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from ._errors import PROG


@contextmanager
def plain_warnings() -> Iterator[None]:
    """Show warnings as ``worldrouter-async: warning: ...`` lines while the block runs.

    A warning raised from Python code says nothing to a command-line user about where, so it
    is shown without a location, and not again once the same text was shown (a batch warns
    about each JSONL line when reading it, then the runner would warn again per request).
    A warning that names a data file (``prompts.jsonl:3``) keeps that location.
    """
    shown: set[str] = set()

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = str(message)
        from_code = filename.endswith(".py")
        if from_code and text in shown:
            return
        shown.add(text)
        where = "" if from_code else f"{filename}:{lineno}: "
        print(f"{PROG}: warning: {where}{text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
