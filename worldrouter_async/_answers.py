"""Reading the API's answers: Retry-After, status-to-exception mapping, and task decoding
checked against the request answered.

An answer about a task still running is decoded lean (only the fields such answers carry,
of the types the wire model wants, built straight into `ImageTask`); anything else, and
every finished task, goes through the one cattrs converter, so both paths give the same task.
"""

from __future__ import annotations

import email.utils
import functools
import json
import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from cattrs.errors import BaseValidationError

from ._errors import (
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TaskMismatchError,
)
from .models import ImageTask, TaskStatus, converter

_SNIPPET: Final = 200


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), else None.

    Garbage and NaN give None (fall back to backoff); infinity is kept so the caller can
    refuse it; negative values and past dates become 0.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _parse_float(raw_ms)
        if seconds is not None:
            return max(seconds / 1000.0, 0.0)
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    seconds = _parse_float(raw)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _parse_float(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return None if math.isnan(value) else value


_STATUS_ERRORS: Final[dict[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error(
    status: int, reason: str | None, headers: Mapping[str, str], body: bytes
) -> APIStatusError:
    message, code = _error_details(body)
    if message is None:
        snippet = body[:_SNIPPET].decode("utf-8", "replace").strip()
        message = f"HTTP {status} {reason or ''}".rstrip() + (
            f" with a non-JSON body: {snippet!r}" if snippet else " with an empty body"
        )
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(
        message,
        status=status,
        code=code,
        request_id=headers.get("x-request-id"),
        retry_after=parse_retry_after(headers),
    )


def _error_details(body: bytes) -> tuple[str | None, str | None]:
    try:
        payload = json.loads(body)
    except ValueError:
        return None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return error["message"], code if isinstance(code, str) else None
    if isinstance(error, str):
        return error, None
    return None, None


def decode_task(
    status: int, body: bytes, request_id: str | None, *, asked: str | None = None
) -> ImageTask:
    """The task an answer describes, checked against the request it answers.

    `asked` is the task id a poll asked about (None for a create): an answer about another
    task is refused, and one that leaves out its id is about the task asked for. A create's
    answer must carry an id, since that id is the only receipt for a task that may be billed.

    Most answers say "still running" with a handful of plain fields; those are built
    straight into the task. A finished task, or any answer of another shape, is decoded by
    the converter (`decode_converted`), so both paths give the same task and the same errors.
    """
    payload = _payload(status, body, request_id, asked)
    task = _lean(payload) if isinstance(payload, dict) else None
    if task is None:
        return _structured(payload, status, request_id, asked)
    if asked is not None:
        _check_about(task, asked, status)
    return task


def decode_converted(
    status: int, body: bytes, request_id: str | None, *, asked: str | None = None
) -> ImageTask:
    """`decode_task` through the converter alone, whatever the answer's shape."""
    return _structured(_payload(status, body, request_id, asked), status, request_id, asked)


def _payload(status: int, body: bytes, request_id: str | None, asked: str | None) -> Any:
    """The JSON of an answer, with the header's request id and (for a poll) its task id."""
    if not body.strip():
        raise APIResponseError(
            f"HTTP {status} with an empty body; expected a JSON image task",
            status=status,
            request_id=request_id,
        )
    try:
        payload = json.loads(body)
    except ValueError as exc:
        snippet = body[:_SNIPPET].decode("utf-8", "replace")
        raise APIResponseError(
            f"HTTP {status} with a body that is not JSON: {snippet!r}",
            status=status,
            request_id=request_id,
        ) from exc
    if isinstance(payload, dict):
        payload["request_id"] = request_id  # the header's, never a body field's
        if payload.get("id") is None and payload.get("task_id") is None:
            if asked is None:
                raise APIResponseError(
                    f"HTTP {status}: the create's answer carries no task id ('id' or "
                    "'task_id'), so the task it may have created cannot be tracked",
                    status=status,
                    request_id=request_id,
                )
            payload["id"] = asked
    return payload


def _structured(payload: Any, status: int, request_id: str | None, asked: str | None) -> ImageTask:
    try:
        task = converter.structure(payload, ImageTask)
    except (BaseValidationError, TypeError, KeyError, ValueError) as exc:
        about = f" of task {asked}" if asked is not None else ""
        raise APIResponseError(
            f"HTTP {status}: the answer{about} is JSON but not an image task ({exc})",
            status=status,
            request_id=request_id,
        ) from exc
    if asked is not None:
        _check_about(task, asked, status)
    return task


#: The text fields of a running task's answer, read as they come when they are strings.
_TEXT_FIELDS: Final = ("task_id", "object", "model")


def _lean(payload: dict[str, Any]) -> ImageTask | None:
    """The task of a still-running answer of the usual shape, without the converter; None
    for anything else (a finished task, images, usage or an error, a field of another type),
    which the converter reads.
    """
    state = payload.get("status")
    task_id = payload.get("id")
    if task_id is None:
        task_id = payload.get("task_id")
    if type(state) is not str or state in TaskStatus.TERMINAL or type(task_id) is not str:
        return None
    data = payload.get("data")
    if payload.get("usage") is not None or payload.get("error") is not None:
        return None
    if data is not None and not (type(data) is list and not data):
        return None
    text: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = payload.get(name)
        if value is not None:
            if type(value) is not str:
                return None
            text[name] = value
    created = payload.get("created")
    created_at = payload.get("created_at")
    if (created is not None and type(created) is not int) or (
        created_at is not None and type(created_at) is not str
    ):
        return None
    try:
        when = None if created_at is None else _created_at(created_at)
    except ValueError:
        return None
    return ImageTask(
        id=task_id,
        status=state,
        created=created,
        created_at=when,
        request_id=payload["request_id"],
        **text,
    )


@functools.lru_cache(maxsize=4096)
def _created_at(text: str) -> datetime:
    """A task's creation time, parsed once per task: it is the same on every poll."""
    return converter.structure(text, datetime)


def _check_about(task: ImageTask, asked: str, status: int) -> None:
    """Refuse an answer to a poll of `asked` that describes another task.

    The answer names its task as a create's does: by ``task_id``, else by ``id`` (the
    documented answers carry both, equal).
    """
    answered = task.task_id or task.id
    if answered != asked:
        raise TaskMismatchError(
            f"HTTP {status}: the poll of task {asked} was answered about task {answered} "
            f"(status {task.status!r}), so the answer is not believed; a gateway, cache or "
            "replica mixed answers up, and the task is asked about again",
            task_id=asked,
            answered_id=answered,
            status=status,
            request_id=task.request_id,
        )
