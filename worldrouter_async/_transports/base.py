"""The wire seam: what a session hands a transport (`WireRequest`) and gets back (`WireResponse`).

A transport sends one HTTP request and returns its status, headers and a bounded body; it
knows nothing of tasks, auth or retries (the API layer, `_api`, does). The session's
default is the aiohttp transport (`_transports.aiohttp`); `worldrouter_async.testing`
has an in-memory one for users' tests, as httpx has `MockTransport`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from attrs import define, field
from yarl import URL

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


def _headers_repr(headers: Mapping[str, str]) -> str:
    """The headers with credentials shown as ``***``: a request's repr never shows a key."""
    shown = {
        name: "***" if name.lower() in _SECRET_HEADERS else value for name, value in headers.items()
    }
    return repr(shown)


def _as_url(value: str | URL) -> URL:
    return value if isinstance(value, URL) else URL(value)


@define(frozen=True)
class WireRequest:
    """One HTTP request to send, as the API layer built it; `url` is a `yarl.URL` (a str is
    parsed), so a request made once, as each task's poll is, is parsed once.

    Example:
        >>> request = WireRequest("GET", "https://api.example/v1/x", {"Authorization": "sk-1"})
        >>> request.headers["Authorization"], "sk-1" in repr(request)
        ('sk-1', False)
    """

    method: str
    url: URL = field(converter=_as_url)
    headers: Mapping[str, str] = field(repr=_headers_repr)
    body: bytes | None = None
    #: True for a create: a request that may start a billed task, so a transport must not
    #: send it on a connection the server may be closing (the aiohttp one keeps a separate
    #: pool of recently used connections for these).
    paid: bool = False
    #: Seconds the whole request may take, or None when the caller bounds it itself (the
    #: poller abandons each poll at `Timeouts.request` with one timer for every poll).
    timeout: float | None = None
    #: The longest (decompressed) body to read; a longer one is not read at all.
    max_body: int = 1 << 20


class _CaselessHeaders(Mapping[str, str]):
    """Headers from a plain dict, looked up by name in any case, as HTTP names are."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = {name.lower(): value for name, value in headers.items()}

    def __getitem__(self, name: str) -> str:
        return self._headers[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __repr__(self) -> str:
        return repr(self._headers)


def _caseless(headers: Mapping[str, str]) -> Mapping[str, str]:
    """A dict of headers made case-insensitive; any other mapping is kept as it is (it must
    be case-insensitive already, as aiohttp's are), which spares a copy per answer."""
    return _CaselessHeaders(headers) if isinstance(headers, dict) else headers


@define(frozen=True)
class WireResponse:
    """The answer to one `WireRequest`: `body` is None when it was longer than `max_body`.

    `headers` are read case-insensitively: a plain dict is wrapped so they are.

    Example:
        >>> WireResponse(200, {"X-Request-Id": "req_1"}, b"{}").headers["x-request-id"]
        'req_1'
    """

    status: int
    headers: Mapping[str, str] = field(converter=_caseless)
    body: bytes | None
    reason: str | None = None


@runtime_checkable
class AsyncTransport(Protocol):
    """How a `Session` sends its API requests: pass one as ``Session(transport=...)``.

    `send` returns any answer the server gave, whatever its status; it raises
    `APIConnectionError` (or a subclass such as `APITimeoutError`) when no full answer
    came, with ``request_sent=False`` only when the request certainly never left (that is
    what lets a create be retried safely). The session calls `aclose` when it closes.

    Example:
        >>> class Recording:
        ...     def __init__(self, inner: AsyncTransport) -> None:
        ...         self.inner, self.sent = inner, []
        ...     async def send(self, request: WireRequest) -> WireResponse:
        ...         self.sent.append(request.method)
        ...         return await self.inner.send(request)
        ...     async def aclose(self) -> None:
        ...         await self.inner.aclose()
    """

    async def send(self, request: WireRequest) -> WireResponse:
        """Send `request` and return the answer; raise `APIConnectionError` if none came."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once by the session that uses the transport."""
        ...
