"""Errors of a bulk job's journal, under the SDK's one root `WorldRouterError`.

```
* WorldRouterError
  + JournalError                 the journal cannot be trusted or written; the run stops
    + JournalInUseError          another run holds the journal's lock
    + JournalLostError           the journal forgot requests it had recorded (or is gone)
    + OutputClaimedError         the output directory belongs to another journal
```
"""

from __future__ import annotations

from .._errors import WorldRouterError


class JournalError(WorldRouterError):
    """The journal is missing, foreign, replaced or unwritable, so the run must stop.

    Everything committed before the error stays in the journal; a rerun resumes from it.
    """


class JournalInUseError(JournalError):
    """Another run holds the journal (two runs would both send creates for the same rows)."""


class JournalLostError(JournalError):
    """The journal holds less than it once recorded, so a run would pay again for the rest.

    Raised before anything is sent when the output directory shows more than the journal
    knows: its claim counts more requests or creates than the journal holds (an older copy
    was restored, or a ``-wal`` file of an older version was lost), or its images outnumber
    the journal's rows, or the journal is missing altogether.
    """


class OutputClaimedError(JournalError):
    """The output directory belongs to another journal (two would overwrite each other's images)."""
