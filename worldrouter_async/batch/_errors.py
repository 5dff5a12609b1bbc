"""Errors of a bulk job's journal, under the SDK's one root `WorldRouterError`.

```
* WorldRouterError
  + JournalError                 the journal cannot be trusted or written; the run stops
    + JournalInUseError          another run holds the journal's lock
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
