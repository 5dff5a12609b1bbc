"""``worldrouter-async gallery OUT``: rebuild a batch's manifest and contact sheet from its journal.

A batch writes both as it runs; this rebuilds them after the fact (an older run, a run
killed before its last refresh, or images moved with their journal).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from ..batch import JournalError, build_gallery, is_bucket
from ._errors import EXIT_OK, UsageError


def run_gallery(args: argparse.Namespace) -> int:
    """``gallery``: rebuild the gallery of ``args.out`` and print where it is."""
    if is_bucket(args.out):
        raise UsageError(
            f"{args.out} is a bucket: the gallery is written beside local images only; "
            "the journal lists every request with its files (worldrouter-async status JOURNAL)"
        )
    out: Path = args.out
    journal: Path = args.journal or out / "journal.sqlite3"
    if not out.is_dir():
        raise UsageError(f"{out} is not a directory; pass the --out directory of a batch run")
    if not journal.is_file():
        raise UsageError(
            f"no journal at {journal}; pass --journal with the journal.sqlite3 of the run "
            "whose images are in "
            f"{out} (the demo keeps it in the folder above its images)"
        )
    try:
        gallery = build_gallery(journal, out)
    except (JournalError, sqlite3.DatabaseError) as exc:
        raise UsageError(
            f"{journal} is not a batch journal ({exc}); pass the journal.sqlite3 of a batch run"
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot write the gallery into {out}: {exc.strerror or exc}") from exc
    print(f"{gallery.index}: {gallery.requests} requests (manifest: {gallery.manifest})")
    return EXIT_OK
