"""Wire models of the async image-task API and the one cattrs converter that reads and writes them.

Responses are read forgivingly (unknown fields ignored, an unknown ``status`` kept as a string)
so a newer server never breaks an older SDK; requests are validated strictly at construction
so a bad value fails before any network call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import attrs
from attrs import define, field
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn

from ._errors import InvalidRequestError

__all__ = [
    "ImageData",
    "ImageRequest",
    "ImageTask",
    "TaskError",
    "TaskStatus",
    "Usage",
    "converter",
]

OUTPUT_FORMATS: Final = ("png", "jpeg", "jpg", "webp")
_SIZE_RE: Final = re.compile(r"^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$")


class TaskStatus:
    """The documented task statuses; `ImageTask.status` may hold others from a newer server."""

    QUEUED: Final = "queued"
    IN_PROGRESS: Final = "in_progress"
    COMPLETED: Final = "completed"
    FAILED: Final = "failed"
    TERMINAL: Final = frozenset({COMPLETED, FAILED})
    #: Statuses the API documentation names; any other (``cancelled``, ``expired``...) is
    #: kept as the server wrote it and polled at `PollPolicy.max_interval`.
    KNOWN: Final = frozenset({QUEUED, IN_PROGRESS, COMPLETED, FAILED})


def _non_empty_text(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{attribute.name} must be a non-empty string (got {value!r})")


def _optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{attribute.name} must be a string (got {value!r})")


def _check_n(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"n must be a positive integer (got {value!r})")


def _check_size(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or value == "auto":
        return
    if not isinstance(value, str) or not _SIZE_RE.match(value):
        raise InvalidRequestError(
            f"size must be 'WIDTHxHEIGHT' such as '1024x1024', or 'auto' (got {value!r})"
        )


def _check_output_format(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and value not in OUTPUT_FORMATS:
        raise InvalidRequestError(
            f"output_format must be one of {', '.join(OUTPUT_FORMATS)} (got {value!r})"
        )


def _check_response_format(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None and value != "url":
        raise InvalidRequestError(
            f"response_format must be 'url' for async tasks (got {value!r}); "
            "leave it unset, async tasks always return stored URLs"
        )


def _check_compression(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidRequestError(
            f"output_compression must be an integer from 0 to 100 (got {value!r})"
        )


_NO_EXTRA: Final[Mapping[str, Any]] = MappingProxyType({})


def _freeze_extra(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return _NO_EXTRA
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"extra must be a mapping of parameter names (got {value!r})")
    # Shared when empty: most requests have no extra, and each one is kept until it ends.
    return MappingProxyType(dict(value)) if value else _NO_EXTRA


def _check_extra(
    instance: object, attribute: attrs.Attribute[Any], value: Mapping[object, Any]
) -> None:
    for key in value:
        if not isinstance(key, str) or not key:
            raise InvalidRequestError(f"extra keys must be non-empty strings (got {key!r})")
        if key in _REQUEST_FIELDS:
            raise InvalidRequestError(
                f"extra must not repeat the known parameter {key!r}; pass {key}= directly"
            )


@define(frozen=True)
class ImageRequest:
    """The body of a create: one prompt for one model, validated when built.

    Fields left ``None`` are not sent; `extra` is merged into the body verbatim for API
    parameters this SDK does not know yet.

    Example:
        >>> ImageRequest(model="gpt-image-2", prompt="a star", size="1024x1024").to_payload()
        {'model': 'gpt-image-2', 'prompt': 'a star', 'size': '1024x1024'}
    """

    model: str = field(validator=_non_empty_text)
    """The model ID, such as ``gpt-image-2`` (see `SUPPORTED_MODELS`)."""
    prompt: str = field(validator=_non_empty_text)
    """What to draw, in plain language."""
    n: int | None = field(default=None, validator=_check_n)
    """How many images (the server caps it; Gemini models decide the count themselves)."""
    size: str | None = field(default=None, validator=_check_size)
    """``WIDTHxHEIGHT`` such as ``1024x1024``, or ``auto``; Gemini models ignore it."""
    quality: str | None = field(default=None, validator=_optional_text)
    """A quality tier such as ``low``, ``medium`` or ``high``; Gemini models ignore it."""
    output_format: str | None = field(default=None, validator=_check_output_format)
    """``png``, ``jpeg``, ``jpg`` or ``webp``."""
    response_format: str | None = field(default=None, validator=_check_response_format)
    """Only ``url`` is accepted: async tasks always return stored URLs."""
    user: str | None = field(default=None, validator=_optional_text)
    """An end-user identifier, forwarded for abuse monitoring and per-user budgets."""
    style: str | None = field(default=None, validator=_optional_text)
    """Sent as given; Gemini models ignore it."""
    background: str | None = field(default=None, validator=_optional_text)
    """Sent as given; Gemini models ignore it."""
    moderation: str | None = field(default=None, validator=_optional_text)
    """Sent as given; Gemini models ignore it."""
    output_compression: int | None = field(default=None, validator=_check_compression)
    """0 to 100; Gemini models ignore it."""
    extra: Mapping[str, Any] = field(
        factory=dict, converter=_freeze_extra, validator=_check_extra, hash=False
    )
    """Parameters this SDK does not know yet, merged into the body verbatim."""

    def to_payload(self) -> dict[str, Any]:
        """The JSON body sent to ``POST /v1/images/generation_tasks``."""
        payload = {
            name: value for name in _WIRE_FIELDS if (value := getattr(self, name)) is not None
        }
        payload.update(self.extra)
        return payload

    def set_parameters(self) -> frozenset[str]:
        """Names of the optional parameters this request sets (for support checks)."""
        return frozenset(name for name in _OPTIONAL_FIELDS if getattr(self, name) is not None)


_REQUEST_FIELDS: Final = frozenset(a.name for a in attrs.fields(ImageRequest))
_WIRE_FIELDS: Final = tuple(a.name for a in attrs.fields(ImageRequest) if a.name != "extra")
_OPTIONAL_FIELDS: Final = tuple(n for n in _WIRE_FIELDS if n not in ("model", "prompt"))


def _b64_repr(value: str | None) -> str:
    return "None" if value is None else f"<{len(value)} base64 characters>"


@define(frozen=True)
class ImageData:
    """One generated image: a stored URL on the storage origin, or the image itself inline.

    The async task API documents stored URLs; `b64_json` (base64 image bytes, as in
    OpenAI-style answers) is read too, so a server that inlines images loses nothing.
    An item with neither is kept as read and refused where a result is built.
    """

    url: str | None = None
    """The stored image's URL (signed storage URLs expire: download them soon)."""
    b64_json: str | None = field(default=None, repr=lambda value: _b64_repr(value))
    """The image's bytes as base64, when the server inlines them (shown by size in reprs)."""

    @property
    def is_image(self) -> bool:
        """True when the item carries an image: a non-empty URL or inline bytes."""
        return bool(self.url) or bool(self.b64_json)


@define(frozen=True)
class Usage:
    """Token usage of one task, or the sum over many (`Usage` supports ``+``)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )


@define(frozen=True)
class TaskError:
    """The error object of a failed task."""

    message: str = "task failed without an error message"
    code: str | None = None
    type: str | None = None


@define(frozen=True)
class ImageTask:
    """A task as the API reports it on create and on every poll.

    `request_id` is the ``x-request-id`` header of the answer this view came from, when
    the server sent one: quote it to support about that answer.
    """

    id: str
    status: str
    task_id: str | None = None
    object: str = "image.generation_task"
    model: str | None = None
    created: int | None = None
    created_at: datetime | None = None
    data: tuple[ImageData, ...] = ()
    usage: Usage | None = None
    error: TaskError | None = None
    request_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the status is ``completed`` or ``failed``."""
        return self.status in TaskStatus.TERMINAL

    @property
    def has_image(self) -> bool:
        """True when at least one item carries an image (a URL or inline bytes): what a
        ``completed`` answer must have to be believed."""
        return any(item.is_image for item in self.data)

    @property
    def urls(self) -> tuple[str, ...]:
        """The stored image URLs (empty until completed; inline images have none)."""
        return tuple(item.url for item in self.data if item.url)


converter: Final = Converter()
"""The single converter for every model; use it to (un)structure from Python."""


def _structure_datetime(value: object, _: type) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise TypeError(f"created_at must be an ISO 8601 string (got {value!r})")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _structure_request(value: object, _: type) -> ImageRequest:
    if isinstance(value, ImageRequest):
        return value
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"a request must be a mapping or ImageRequest (got {value!r})")
    if unknown := value.keys() - _REQUEST_FIELDS:
        names = ", ".join(sorted(map(repr, unknown)))
        raise InvalidRequestError(
            f"unknown request parameter(s) {names}; known parameters are "
            f"{', '.join(sorted(_REQUEST_FIELDS))}; put parameters this SDK does not know "
            "yet in extra={...}"
        )
    for required in ("model", "prompt"):
        if required not in value:
            raise InvalidRequestError(f"a request needs {required!r} (got {dict(value)!r})")
    return ImageRequest(**value)


def _unstructure_request(request: ImageRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        name: value for name in _WIRE_FIELDS if (value := getattr(request, name)) is not None
    }
    if request.extra:
        body["extra"] = dict(request.extra)
    return body


converter.register_structure_hook(datetime, _structure_datetime)
converter.register_unstructure_hook(datetime, datetime.isoformat)
converter.register_structure_hook(ImageRequest, _structure_request)
converter.register_unstructure_hook(ImageRequest, _unstructure_request)
_TASK_FIELDS: Final = frozenset(a.name for a in attrs.fields(ImageTask))
_structure_task_fields = make_dict_structure_fn(ImageTask, converter)


def _structure_task(value: object, _: type) -> ImageTask:
    if not isinstance(value, Mapping):
        raise TypeError(f"a task must be a JSON object (got {value!r})")
    body = {k: v for k, v in value.items() if k in _TASK_FIELDS and v is not None}
    if "id" not in body and "task_id" in body:
        body["id"] = body["task_id"]
    return _structure_task_fields(body, ImageTask)


converter.register_structure_hook(ImageTask, _structure_task)
