"""`Session`'s deprecated names: each still works, warns, and names its replacement.

A name that must change keeps working here for a while, with a `DeprecationWarning` saying
what to use instead, and a line in the changelog's ``Deprecated`` section.
"""

from __future__ import annotations

import warnings

from ._api import APIClient


class DeprecatedSessionNames:
    """`Session`'s names kept for compatibility (`transport`)."""

    _api: APIClient

    @property
    def transport(self) -> APIClient:
        """Deprecated: the session's internal API client, not a transport; pass
        ``Session(transport=...)`` to choose how requests are sent."""
        warnings.warn(
            "Session.transport is deprecated: it was the internal API client, not a "
            "transport; pass Session(transport=...) (an AsyncTransport) to choose how "
            "requests are sent",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._api
