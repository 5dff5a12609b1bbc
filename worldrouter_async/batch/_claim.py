"""The claim of an output directory: which journal owns it, and how much that journal recorded.

A run writes ``.worldrouter-job`` into its output directory, naming its journal (path and
identity) and the journal's high-water mark: the rows and the creates sent it has recorded.
The mark moves after each journal commit that adds rows or counts a send, so it is never
ahead of the journal. A later run refuses to start when the directory belongs to another
journal (two jobs would overwrite each other's images), or when its journal holds less
than the mark (an older copy restored, a ``-wal`` file of an older version lost): a run on
such a journal would pay again for requests it forgot.

A directory without a claim (output of an older version, or of ``generate``) is judged by
its images instead: more batch-named images than journal rows means the journal lost rows.
Images named after a task id (``imgtask_...-0.png``) are ``generate``'s and never count.

This is the one place that guards an output directory: the claim, the refusal of a fresh
start over a job's images, and the cleanup of downloads a killed run left half-written.
The claim reads the SQLite journal file (its identity and high-water mark); a store given to
the runner by the caller has no claim.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Final

from attrs import define
from cattrs.errors import BaseValidationError

from ..models import converter
from ._errors import JournalError, JournalLostError, OutputClaimedError
from .journal import HighWater, SqliteFile

CLAIM_NAME: Final = ".worldrouter-job"
_IMAGE_FILE: Final = re.compile(r"(?P<stem>.+)-[0-9]+\.(png|jpg|jpeg|webp|gif|bin)")
_TASK_ID_STEM: Final = re.compile(r"imgtask_[A-Za-z0-9_-]*")
_NEW_JOURNAL: Final = "start over on purpose with new_journal=True (CLI: --new-journal)"


@define(frozen=True)
class Claim:
    """What ``.worldrouter-job`` holds: the owning journal and its high-water mark."""

    journal: str  # the journal's absolute path when it last ran (for messages)
    journal_id: str
    rows: int
    sends: int

    @property
    def high_water(self) -> HighWater:
        """The rows and sends the owning journal had recorded."""
        return HighWater(self.rows, self.sends)


def read_claim(directory: Path) -> Claim | None:
    """The claim in `directory`, or None when there is none."""
    path = directory / CLAIM_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot read {path} ({exc.strerror or exc})") from exc
    try:
        return converter.structure(json.loads(text), Claim)
    except (ValueError, BaseValidationError) as exc:
        raise JournalError(
            f"{path} is not a claim written by worldrouter-async ({exc}); if no batch job "
            f"writes into {directory}, delete that file and rerun"
        ) from exc


def refuse_fresh_start(directory: Path, journal: Path) -> None:
    """Refuse a new journal where a job's images already are (its journal is presumed lost).

    A directory whose images were deleted with their journal starts a new job; only a claim
    naming another journal that still exists keeps it.
    """
    claim = read_claim(directory)
    if claim is not None and _owned_elsewhere(claim, journal):
        raise _claimed(directory, claim, journal)
    if not job_images(directory):
        return
    if claim is not None:
        raise JournalLostError(
            f"{directory} already holds images of the job journaled in {claim.journal} "
            f"({claim.rows} requests, {claim.sends} creates sent), but there is no journal "
            f"at {journal}: starting a new journal would create (and pay for) every request "
            f"again. Put that journal back, or {_NEW_JOURNAL}"
        )
    raise JournalLostError(
        f"{directory} already holds images but there is no journal at {journal}: "
        "starting a new journal would create (and pay for) every request again. Point "
        f"the journal at the old one, or {_NEW_JOURNAL}"
    )


class OutputClaim:
    """A run's hold on its output directory: checked and taken at start, then advanced."""

    def __init__(self, directory: Path, journal: Path) -> None:
        self.path = directory / CLAIM_NAME
        self._directory = directory
        self._journal = journal
        self._journal_id = ""

    def take(self, journal_id: str, mark: HighWater, *, new_journal: bool) -> None:
        """Check the directory against the journal (see the module docstring), then claim it.

        `new_journal` accepts a journal below the mark, or a replaced one, as the user's
        choice to pay again; it never takes a directory whose owning journal still exists
        elsewhere.
        """
        self._journal_id = journal_id
        self._directory.mkdir(parents=True, exist_ok=True)
        claim = read_claim(self._directory)
        if claim is None:
            stems = len(job_images(self._directory))
            if stems > mark.rows and not new_journal:
                raise JournalLostError(
                    f"journal {self._journal} knows {mark.rows} requests, but "
                    f"{self._directory} holds the images of {stems}: the journal lost rows "
                    "(its -wal file deleted, or an older copy put back), and a run would pay "
                    "again for the requests it forgot. Put the complete journal back (with its "
                    f"-wal file, if it had one), or {_NEW_JOURNAL}"
                )
            if self._create(mark):
                return
            claim = read_claim(self._directory)  # another run claimed it just now
            assert claim is not None
        self._check(claim, mark, new_journal=new_journal)
        self.advance(mark)

    def _check(self, claim: Claim, mark: HighWater, *, new_journal: bool) -> None:
        if claim.journal_id != self._journal_id:
            if _owned_elsewhere(claim, self._journal):
                raise _claimed(self._directory, claim, self._journal)
            if not new_journal and job_images(self._directory):
                raise JournalLostError(
                    f"{self._directory} was written by the journal {claim.journal} "
                    f"({claim.rows} requests, {claim.sends} creates sent), and the journal at "
                    f"{self._journal} is another one: a run would create again the requests "
                    f"that journal recorded. Put that journal back, or {_NEW_JOURNAL}"
                )
        elif not mark.covers(claim.high_water) and not new_journal:
            raise JournalLostError(
                f"journal {self._journal} lost records: it holds {mark.rows} requests and "
                f"{mark.sends} creates sent, but it had recorded {claim.rows} and "
                f"{claim.sends} (as {self.path} notes). An older copy was put back (or, for a "
                "journal of an older version, its -wal file was lost), and a run would pay "
                "again for the requests it forgot. Put the complete journal back (with its "
                f"-wal file, if it had one), or {_NEW_JOURNAL}"
            )

    def advance(self, mark: HighWater) -> None:
        """Record the journal's new mark (called after the commit that reached it)."""
        self._write(mark, exclusive=False)

    def _create(self, mark: HighWater) -> bool:
        """Write the first claim; False when another run claimed the directory meanwhile."""
        return self._write(mark, exclusive=True)

    def _write(self, mark: HighWater, *, exclusive: bool) -> bool:
        # Writing the claim is best effort: the journal is the record that keeps a run from
        # paying twice, and the claim only helps to notice a journal that lost it. A full
        # disk under the images must end rows as download_failed, not stop the run here.
        temp = self.path.with_name(f"{CLAIM_NAME}.{os.getpid()}.tmp")
        try:
            temp.write_text(self._encode(mark), encoding="utf-8")
            if exclusive:
                os.link(temp, self.path)  # fails if another run claimed the directory first
            else:
                os.replace(temp, self.path)
        except FileExistsError:
            return False
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
        return True

    def _encode(self, mark: HighWater) -> str:
        claim = Claim(str(self._journal.absolute()), self._journal_id, mark.rows, mark.sends)
        return json.dumps(converter.unstructure(claim)) + "\n"


def job_images(directory: Path) -> set[str]:
    """The stems of the batch-named images in `directory` (``generate``'s are left out)."""
    stems: set[str] = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            found = _IMAGE_FILE.fullmatch(entry.name)
            if found and entry.is_file() and not _TASK_ID_STEM.fullmatch(found["stem"]):
                stems.add(found["stem"])
    return stems


def _owned_elsewhere(claim: Claim, journal: Path) -> bool:
    """True when the claim names another journal file, and that file still exists."""
    return Path(claim.journal) != journal.absolute() and Path(claim.journal).exists()


def _claimed(directory: Path, claim: Claim, journal: Path) -> OutputClaimedError:
    return OutputClaimedError(
        f"{directory} belongs to the job journaled in {claim.journal}, not to {journal}: "
        "two journals on one output directory overwrite each other's images. Use that "
        "journal (CLI: --journal " + claim.journal + "), or another output directory "
        "(CLI: another --out)"
    )


def claim_output(directory: Path, journal: SqliteFile, *, new_journal: bool) -> None:
    """Claim `directory` for the journal file, refusing one showing lost records.

    From then on each commit that adds rows or counts a send moves the claim's mark.
    """
    assert journal.journal_id is not None  # given by make_durable
    claim = OutputClaim(directory, journal.path)
    claim.take(journal.journal_id, journal.high_water, new_journal=new_journal)
    journal.on_advance = claim.advance


def remove_partial_downloads(directory: Path) -> None:
    """Delete the ``.*.part`` files a run killed mid-download left behind."""
    if directory.is_dir():
        for part in directory.glob(".*.part"):
            part.unlink(missing_ok=True)
