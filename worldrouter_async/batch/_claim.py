"""The claim of an output: which journal owns it, and how much that journal recorded.

A run writes ``.worldrouter-job`` into its output (a directory, or a bucket prefix), naming its
journal (path and identity) and the journal's high-water mark: the rows and the creates sent
it has recorded. The mark moves after each journal commit that adds rows or counts a send, so
it is never ahead of the journal. A later run refuses to start when the output belongs to
another journal (two jobs would overwrite each other's images), or when its journal holds less
than the mark (an older copy restored, a ``-wal`` file of an older version lost): a run on
such a journal would pay again for requests it forgot.

An output without a claim (output of an older version, or of ``generate``) is judged by
its images instead: more batch-named images than journal rows means the journal lost rows.
Images named after a task id (``imgtask_...-0.png``) are ``generate``'s and never count.

This is the one place that guards an output: the claim, the refusal of a fresh start over a
job's images. It reaches the output through `ClaimPlace` (``_outputs.py``) and the journal
through `ClaimingJournal`: its identity and high-water mark, and a hook called as the mark
moves. The SQLite file implements it, and so does a PostgreSQL job (``_postgres_job.py``:
its UUID, and the rows and sends all its workers committed); a store given to the runner by
the caller has no claim.

On a bucket the claim is created with ``If-None-Match: *`` (one of two racing runs wins, as
with a local ``link``), and moved at most every `ClaimPlace.claim_interval` seconds (each move
is one PUT, made by `OutputClaim.keep_up` off the journal's commit threads), the last mark
written when the journal closes: a journal that lost only its
last seconds of records may go unnoticed there. A claim naming another journal file is
always taken as owned elsewhere, since that file may be on another machine.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from typing import Final, Protocol

import anyio
import anyio.to_thread
from attrs import define
from cattrs.errors import BaseValidationError

from ..models import converter
from ._errors import JournalError, JournalLostError, OutputClaimedError
from ._outputs import ClaimPlace
from .journal import HighWater, is_postgres_url

CLAIM_NAME: Final = ".worldrouter-job"
_IMAGE_FILE: Final = re.compile(r"(?P<stem>.+)-[0-9]+\.(png|jpg|jpeg|webp|gif|bin)")
_TASK_ID_STEM: Final = re.compile(r"imgtask_[A-Za-z0-9_-]*")
_NEW_JOURNAL: Final = "start over on purpose with new_journal=True (CLI: --new-journal)"


class ClaimingJournal(Protocol):
    """What the claim needs from a journal: who it is, how much it recorded, and a hook.

    `SqliteFile` implements it, and `JobMark` (``_postgres_job.py``) for a PostgreSQL job.
    """

    @property
    def journal_id(self) -> str | None:
        """The journal's identity, fixed when it was created."""
        ...

    @property
    def high_water(self) -> HighWater:
        """The rows and sends the journal has committed."""
        ...

    #: Called with the new mark after each commit that records intents or a send.
    on_advance: Callable[[HighWater], None] | None


@define(frozen=True)
class JournalName:
    """How a claim names a journal: `key` is stored in the claim, `label` shown in messages."""

    key: str  # an absolute path (or a URL): the same for every run on that journal
    label: str  # as the user gave it


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


def read_claim(place: ClaimPlace) -> Claim | None:
    """The claim in `place`, or None when there is none."""
    path = place.location(CLAIM_NAME)
    try:
        text = place.read_text(CLAIM_NAME)
    except OSError as exc:
        raise JournalError(f"cannot read {path} ({exc.strerror or exc})") from exc
    if text is None:
        return None
    try:
        return converter.structure(json.loads(text), Claim)
    except (ValueError, BaseValidationError) as exc:
        raise JournalError(
            f"{path} is not a claim written by worldrouter-async ({exc}); if no batch job "
            f"writes into {place}, delete that file and rerun"
        ) from exc


def refuse_fresh_start(place: ClaimPlace, journal: JournalName) -> None:
    """Refuse a new journal where a job's images already are (its journal is presumed lost).

    An output whose images were deleted with their journal starts a new job; only a claim
    naming another journal that still exists keeps it.
    """
    claim = read_claim(place)
    if claim is not None and _owned_elsewhere(place, claim, journal):
        raise _claimed(place, claim, journal)
    if not job_images(place):
        return
    if claim is not None:
        raise JournalLostError(
            f"{place} already holds images of the job journaled in {claim.journal} "
            f"({claim.rows} requests, {claim.sends} creates sent), but there is no journal "
            f"at {journal.label}: starting a new journal would create (and pay for) every "
            f"request again. Put that journal back, or {_NEW_JOURNAL}"
        )
    raise JournalLostError(
        f"{place} already holds images but there is no journal at {journal.label}: "
        "starting a new journal would create (and pay for) every request again. Point "
        f"the journal at the old one, or {_NEW_JOURNAL}"
    )


class OutputClaim:
    """A run's hold on its output: checked and taken at start, then advanced."""

    def __init__(self, place: ClaimPlace, journal: JournalName) -> None:
        self.path = place.location(CLAIM_NAME)
        self._place = place
        self._journal = journal
        self._journal_id = ""
        self._lock = threading.Lock()  # marks arrive from the journal's commit threads
        self._unwritten: HighWater | None = None

    def take(self, journal: ClaimingJournal, *, new_journal: bool) -> None:
        """Check the output against the journal (see the module docstring), then claim it.

        `new_journal` accepts a journal below the mark, or a replaced one, as the user's
        choice to pay again; it never takes an output whose owning journal still exists
        elsewhere. The journal's mark is read after the claim, so a claim that another
        worker of the same journal moved meanwhile is never ahead of it.
        """
        assert journal.journal_id is not None  # given by make_durable
        self._journal_id = journal.journal_id
        claim = read_claim(self._place)
        if claim is None:
            mark = journal.high_water
            stems = len(job_images(self._place))
            if stems > mark.rows and not new_journal:
                raise JournalLostError(
                    f"journal {self._journal.label} knows {mark.rows} requests, but "
                    f"{self._place} holds the images of {stems}: the journal lost rows "
                    "(its -wal file deleted, or an older copy put back), and a run would pay "
                    "again for the requests it forgot. Put the complete journal back (with its "
                    f"-wal file, if it had one), or {_NEW_JOURNAL}"
                )
            if self._create(mark):
                return
            claim = read_claim(self._place)  # another run claimed it just now
            assert claim is not None
        mark = journal.high_water
        self._check(claim, mark, new_journal=new_journal)
        self._write(mark)

    def _check(self, claim: Claim, mark: HighWater, *, new_journal: bool) -> None:
        if claim.journal_id != self._journal_id:
            if _owned_elsewhere(self._place, claim, self._journal):
                raise _claimed(self._place, claim, self._journal)
            if not new_journal and job_images(self._place):
                raise JournalLostError(
                    f"{self._place} was written by the journal {claim.journal} "
                    f"({claim.rows} requests, {claim.sends} creates sent), and the journal at "
                    f"{self._journal.label} is another one: a run would create again the "
                    f"requests that journal recorded. Put that journal back, or {_NEW_JOURNAL}"
                )
        elif not mark.covers(claim.high_water) and not new_journal:
            raise JournalLostError(
                f"journal {self._journal.label} lost records: it holds {mark.rows} requests and "
                f"{mark.sends} creates sent, but it had recorded {claim.rows} and "
                f"{claim.sends} (as {self.path} notes). An older copy was put back (or, for a "
                "journal of an older version, its -wal file was lost), and a run would pay "
                "again for the requests it forgot. Put the complete journal back (with its "
                f"-wal file, if it had one), or {_NEW_JOURNAL}"
            )

    def advance(self, mark: HighWater) -> None:
        """Record the journal's new mark (called after the commit that reached it).

        On a place with a `claim_interval` (a bucket: each write is a PUT) the mark is only
        noted here, so the journal's commit never waits on the network; `keep_up` writes it.
        """
        with self._lock:
            if self._place.claim_interval:
                self._unwritten = mark
                return
            self._write(mark)

    async def keep_up(self) -> None:
        """Write the latest noted mark every `claim_interval` seconds, until cancelled."""
        if not self._place.claim_interval:
            return
        while True:
            await anyio.sleep(self._place.claim_interval)
            await anyio.to_thread.run_sync(self.flush)

    def flush(self) -> None:
        """Write the last mark `advance` noted, if any (also when the journal closes)."""
        with self._lock:
            mark, self._unwritten = self._unwritten, None
        if mark is not None:
            self._write(mark)

    def _create(self, mark: HighWater) -> bool:
        """Write the first claim; False when another run claimed the output meanwhile."""
        try:
            return self._place.create_text(CLAIM_NAME, self._encode(mark))
        except OSError:
            return True  # best effort, as in `_write`

    def _write(self, mark: HighWater) -> None:
        # Writing the claim is best effort: the journal is the record that keeps a run from
        # paying twice, and the claim only helps to notice a journal that lost it. A full
        # disk under the images must end rows as download_failed, not stop the run here.
        with contextlib.suppress(OSError):
            self._place.replace_text(CLAIM_NAME, self._encode(mark))

    def _encode(self, mark: HighWater) -> str:
        claim = Claim(self._journal.key, self._journal_id, mark.rows, mark.sends)
        return json.dumps(converter.unstructure(claim)) + "\n"


def job_images(place: ClaimPlace) -> set[str]:
    """The stems of the batch-named images in `place` (``generate``'s are left out)."""
    stems: set[str] = set()
    try:
        names = place.file_names()
    except OSError as exc:
        raise JournalError(f"cannot list {place} ({exc.strerror or exc})") from exc
    for name in names:
        found = _IMAGE_FILE.fullmatch(name)
        if found and not _TASK_ID_STEM.fullmatch(found["stem"]):
            stems.add(found["stem"])
    return stems


def _owned_elsewhere(place: ClaimPlace, claim: Claim, journal: JournalName) -> bool:
    """True when the claim names another journal, and that journal still exists: a file
    that is there, or any job in a database (which no output can see into)."""
    return claim.journal != journal.key and (
        is_postgres_url(claim.journal) or place.journal_exists(claim.journal)
    )


def _claimed(place: ClaimPlace, claim: Claim, journal: JournalName) -> OutputClaimedError:
    return OutputClaimedError(
        f"{place} belongs to the job journaled in {claim.journal}, not to {journal.label}: "
        "two journals on one output directory overwrite each other's images. Use that "
        "journal (CLI: --journal " + claim.journal + "), or another output directory "
        "(CLI: another --out)" + place.claim_hint
    )


def claim_output(
    place: ClaimPlace, journal: ClaimingJournal, name: JournalName, *, new_journal: bool
) -> OutputClaim:
    """Claim `place` for `journal`, refusing one showing lost records.

    From then on each commit that adds rows or counts a send moves the claim's mark; call
    `OutputClaim.flush` when the journal closes.
    """
    claim = OutputClaim(place, name)
    claim.take(journal, new_journal=new_journal)
    journal.on_advance = claim.advance
    return claim
