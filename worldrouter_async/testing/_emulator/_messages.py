"""The emulator's request and answer values, free of any HTTP server.

`EmulatedAPI` takes an `EmulatedRequest` and gives back an `EmulatedResponse` (or raises
`NoAnswer` when the server would close the connection without answering), so the API's
behaviour runs the same behind aiohttp sockets and behind an in-memory transport.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

from attrs import define, field

_JSON: Final = "application/json; charset=utf-8"
_TEXT: Final = "text/plain; charset=utf-8"
_HTML: Final = "text/html; charset=utf-8"


def _lower_case(headers: Mapping[str, str]) -> Mapping[str, str]:
    """A dict of headers re-keyed by lower-case name, so lookups ignore case as HTTP does.

    Any other mapping is kept as it is: it must already be case-insensitive (aiohttp's
    ``CIMultiDictProxy``), which spares a server a copy per request.
    """
    if isinstance(headers, dict):
        return {name.lower(): value for name, value in headers.items()}
    return headers


@define(frozen=True)
class EmulatedRequest:
    """One HTTP request to the emulated API or storage origin.

    Args:
        method: the HTTP method, upper case (``"POST"``, ``"GET"``).
        path: the decoded path without the query (``"/v1/images/generation_tasks"``).
        headers: the request headers, read with `header`: a dict (copied with lower-case
            names) or a case-insensitive mapping such as aiohttp's ``request.headers``.
        body: the raw request body (empty for a GET).
        query: the decoded query parameters (the storage origin reads ``v``).
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(factory=dict, converter=_lower_case)
    body: bytes = b""
    query: Mapping[str, str] = field(factory=dict)

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case), or None."""
        return self.headers.get(name.lower())


@define(frozen=True)
class EmulatedResponse:
    """One HTTP answer of the emulator: status, headers (Content-Type included) and body."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


class NoAnswer(Exception):
    """The emulated server closed the connection without answering.

    Raised by `EmulatedAPI.handle` for a ``drop`` or ``hang`` fault (once the hang ends),
    their ``_after_create`` variants (the task exists) and a request caught by a
    ``"refuse"`` outage; a transport turns it into a connection error.
    """


def request_id() -> str:
    """A fresh ``x-request-id`` value, as the API tags its answers with."""
    return f"req_{uuid.uuid4().hex[:12]}"


def json_answer(
    body: Any, *, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> EmulatedResponse:
    """A JSON answer, serialized as aiohttp's ``json_response`` does."""
    return EmulatedResponse(
        status, (("Content-Type", _JSON), *headers), json.dumps(body).encode("utf-8")
    )


def error_answer(
    status: int, message: str, code: str, kind: str, *headers: tuple[str, str]
) -> EmulatedResponse:
    """An OpenAI-style error body, tagged with its own request ID."""
    return json_answer(
        {"error": {"message": message, "type": kind, "code": code, "param": None}},
        status=status,
        headers=(("x-request-id", request_id()), *headers),
    )


def text_answer(status: int, text: str, *, html: bool = False) -> EmulatedResponse:
    """A plain-text (or HTML) answer, as a gateway or aiohttp itself gives."""
    return EmulatedResponse(status, (("Content-Type", _HTML if html else _TEXT),), text.encode())


#: What aiohttp answers for a path no route matches.
NOT_FOUND: Final = text_answer(404, "404: Not Found")


def method_not_allowed(allowed: str) -> EmulatedResponse:
    """What aiohttp answers for a known path asked with another method."""
    answer = text_answer(405, "405: Method Not Allowed")
    return EmulatedResponse(405, (*answer.headers, ("Allow", allowed)), answer.body)
