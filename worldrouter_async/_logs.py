"""The SDK's logger, and the ``WORLDROUTER_LOG`` switch that shows it without any setup.

Everything logs to the standard ``logging`` tree under ``worldrouter_async``: one debug
line per HTTP request, info lines for retries, rate-limit pauses and outages (written by
`_log_events.LogEvents`, a subscriber of the session's events). Nothing is printed
unless the application configures logging or sets ``WORLDROUTER_LOG=debug`` (or ``info``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

from ._errors import ConfigurationError

logger: Final = logging.getLogger("worldrouter_async")

LOG_ENV: Final = "WORLDROUTER_LOG"
_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class _EnvHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler ``WORLDROUTER_LOG`` installs (a class, so it is added only once)."""


def configure_from_env() -> None:
    """Apply ``WORLDROUTER_LOG`` (read now, when a session opens): a level and a stderr handler.

    Unset or empty leaves logging to the application; a second call only updates the level.
    """
    raw = os.environ.get(LOG_ENV, "").strip().lower()
    if not raw:
        return
    level = _LEVELS.get(raw)
    if level is None:
        raise ConfigurationError(
            f"{LOG_ENV}={raw!r} is not a log level; use one of {', '.join(_LEVELS)}"
        )
    logger.setLevel(level)
    if not any(isinstance(handler, _EnvHandler) for handler in logger.handlers):
        handler = _EnvHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
