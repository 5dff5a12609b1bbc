"""The documented parameter support matrix, encoded once, and the check that warns about it.

The API accepts every parameter for every model and silently ignores the ones a model does
not honour; this module turns that silence into an `IgnoredParameterWarning` (or, in strict
mode, an `IgnoredParameterError`) before the paid create is sent.
"""

from __future__ import annotations

import sys
import warnings
from typing import Final

from attrs import define

from ._errors import IgnoredParameterError, IgnoredParameterWarning
from .models import ImageRequest

GPT_IMAGE_MODELS: Final = frozenset({"gpt-image-2"})
GEMINI_MODELS: Final = frozenset(
    {"gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"}
)
SUPPORTED_MODELS: Final = GPT_IMAGE_MODELS | GEMINI_MODELS

#: Parameters each documented model accepts but ignores. Unknown models are absent: a
#: deployment may extend the list, and we do not guess what its models honour.
IGNORED_PARAMETERS: Final[dict[str, frozenset[str]]] = {
    **{model: frozenset() for model in GPT_IMAGE_MODELS},
    **{
        model: frozenset(
            {"size", "n", "quality", "style", "background", "moderation", "output_compression"}
        )
        for model in GEMINI_MODELS
    },
}


def ignored_parameters(request: ImageRequest) -> tuple[str, ...]:
    """The parameters `request` sets that its model will silently ignore, sorted."""
    ignored = IGNORED_PARAMETERS.get(request.model)
    return tuple(sorted(request.set_parameters() & ignored)) if ignored else ()


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside this package, so warnings point at user code."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "worldrouter_async"
    ):
        frame = frame.f_back
        level += 1
    return level


def ignored_message(request: ImageRequest) -> str | None:
    """What to tell the user if `request` sets parameters its model ignores, else None."""
    ignored = ignored_parameters(request)
    if not ignored:
        return None
    names = ", ".join(ignored)
    return (
        f"{request.model} ignores {names}; the task will run without "
        f"{'it' if len(ignored) == 1 else 'them'}. Remove {names} from the request, "
        "or pick a model that honours it"
    )


@define(frozen=True)
class CallerLine:
    """Warn at the user's line: the first frame on the stack outside this package."""

    def warn(self, message: str) -> None:
        """Issue `message` as an `IgnoredParameterWarning` at the caller's line."""
        warnings.warn(message, IgnoredParameterWarning, stacklevel=_caller_stacklevel())


@define(frozen=True)
class InputLine:
    """Warn naming where a request was read, when no Python line made it.

    `filename` is a JSONL file, or a name such as ``<pipeline request 3>`` or
    ``<batch request 'KEY'>``; `line` is 0 when the input has no lines.
    """

    filename: str
    line: int = 0

    def warn(self, message: str) -> None:
        """Issue `message` as an `IgnoredParameterWarning` naming this input line."""
        warnings.warn_explicit(message, IgnoredParameterWarning, self.filename, self.line)


@define(frozen=True)
class AlreadyReported:
    """Warn nowhere: whoever read the request reported its ignored parameters already."""

    def warn(self, message: str) -> None:
        """Nothing: the warning was issued once, when the request was read."""


WarnAt = CallerLine | InputLine | AlreadyReported
"""Where the warning about a request's ignored parameters points."""

CALLER: Final = CallerLine()
ALREADY_REPORTED: Final = AlreadyReported()


def check_support(request: ImageRequest, *, strict: bool, warn_at: WarnAt = CALLER) -> None:
    """Warn at `warn_at` (or raise when `strict`) if `request` sets parameters its model ignores.

    The one support check: every way of submitting calls it before the paid create.
    """
    message = ignored_message(request)
    if message is None:
        return
    if strict:
        raise IgnoredParameterError(message)
    warn_at.warn(message)


def warn_ignored_in_file(request: ImageRequest, *, filename: str, lineno: int) -> None:
    """Warn at line `lineno` of input file `filename` if `request`'s model ignores parameters.

    Input read from a file (a JSONL batch) has no Python line to point at, so the warning
    names the file and line the request came from instead.
    """
    check_support(request, strict=False, warn_at=InputLine(filename, lineno))
