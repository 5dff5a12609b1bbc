"""The aiohttp transport: pooled clients built from the network settings, and the one place
where aiohttp's errors become ours.

`AiohttpTransport` is the session's default `AsyncTransport`: one pool for polls and other
reads, another for creates (paid requests) that reuses only recently used connections. The
downloader builds its pool here too (`build_client`), so API calls and downloads share the
proxy and TLS trust, and reads bodies with the same bound (`read_limited`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NoReturn

import aiohttp
from yarl import URL

from .._config import Limits, Timeouts
from .._errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    ProxyError,
    TLSVerificationError,
)
from .._version import __version__
from .base import WireRequest, WireResponse
from .network import Network, Proxy

USER_AGENT: Final = f"worldrouter-async/{__version__}"

_CA_FIX: Final = (
    "trust your CA with Session(verify='/path/to/ca.pem') (CLI: --ca-bundle) or SSL_CERT_FILE"
)


def build_client(
    network: Network,
    *,
    timeout: aiohttp.ClientTimeout,
    max_connections: int,
    keepalive_timeout: float | None = None,
) -> aiohttp.ClientSession:
    """A new pooled aiohttp client with `network`'s TLS trust (call from the event loop).

    No default headers but the User-Agent, no cookies, no ``trust_env`` (we resolve
    proxies ourselves, so aiohttp never reads ``.netrc`` or the environment per request).
    `keepalive_timeout` bounds how long an idle pooled connection may still be reused
    (aiohttp's default when None).
    """
    connector = (
        aiohttp.TCPConnector(limit=max_connections, ssl=network.ssl)
        if keepalive_timeout is None
        else aiohttp.TCPConnector(
            limit=max_connections, ssl=network.ssl, keepalive_timeout=keepalive_timeout
        )
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class AiohttpTransport:
    """Sends API requests over two aiohttp pools, through `network`'s proxy for `api_url`.

    Made when a session opens (the network settings are resolved then); refuses at once to
    send the API key in clear text to a proxy.
    """

    def __init__(
        self, network: Network, *, api_url: str, timeouts: Timeouts, limits: Limits
    ) -> None:
        url = URL(api_url)
        self._proxy = network.proxy_for(url)
        if self._proxy is not None and url.scheme == "http":
            raise ConfigurationError(
                f"refusing to send the API key over plain http:// through the proxy "
                f"{self._proxy}: the proxy would read it. Use an https:// base URL, or add "
                f"{url.host} to NO_PROXY"
            )
        self._timeouts = timeouts
        # One timer per request: the total bounds pool waits, silence and trickles alike
        # (API answers are small), and sock_connect adds one only when a socket opens.
        bounded = aiohttp.ClientTimeout(total=timeouts.request, sock_connect=timeouts.connect)
        # A request the caller bounds itself (a poll: the poller's watchdog abandons it at
        # `Timeouts.request`, one timer for all polls) skips aiohttp's per-request timer.
        self._proxied = proxy_options(self._proxy)
        self._bounded = {**self._proxied, "timeout": bounded}
        self._client = build_client(
            network,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
            max_connections=limits.max_connections,
        )
        # Creates get their own pool, which hands out only connections idle for less than
        # `create_keepalive` (aiohttp checks the idle time when it reuses a connection):
        # a create must never race the server closing an idle keep-alive connection.
        self._create_client = build_client(
            network,
            timeout=bounded,
            max_connections=limits.max_connections,
            keepalive_timeout=timeouts.create_keepalive,
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"<AiohttpTransport proxy={self._proxy}>"

    async def send(self, request: WireRequest) -> WireResponse:
        """One request over the pool its kind calls for, its body read up to `max_body`."""
        if self._closed:
            raise RuntimeError("the transport is closed; use 'async with Session(...)'")
        client = self._create_client if request.paid else self._client
        options = self._options(request)
        try:
            async with client.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                **options,
            ) as response:
                cap = request.max_body
                if fits_declared_length(response, cap):
                    body: bytes | None = await response.read()
                else:
                    body = await read_limited(response, cap)
                return WireResponse(response.status, response.headers, body, response.reason)
        except (aiohttp.ClientError, TimeoutError) as exc:
            deadline = self._timeouts.request if request.timeout is None else request.timeout
            raise_connection_error(
                exc,
                what=f"{request.method} {request.url}",
                proxy=self._proxy,
                timeouts=self._timeouts,
                deadline=deadline,
            )

    def _options(self, request: WireRequest) -> Mapping[str, Any]:
        if request.paid or request.timeout is None:
            return self._proxied  # the create pool's own timeout is the bound
        if request.timeout == self._timeouts.request:
            return self._bounded
        timeout = aiohttp.ClientTimeout(total=request.timeout, sock_connect=self._timeouts.connect)
        return {**self._proxied, "timeout": timeout}

    async def aclose(self) -> None:
        """Close both pools; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.close()
        await self._create_client.close()


def proxy_options(proxy: Proxy | None) -> dict[str, Any]:
    """The keyword arguments that send one aiohttp request through `proxy` (none without)."""
    if proxy is None:
        return {}
    return {"proxy": proxy.url, "proxy_headers": proxy.headers or None}


def fits_declared_length(response: aiohttp.ClientResponse, limit: int) -> bool:
    """True when the body declares an uncompressed length within `limit`: one read is safe.

    The usual API answer; the hot path checks this before paying for `read_limited`.
    """
    length = response.content_length
    return length is not None and length <= limit and "Content-Encoding" not in response.headers


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The (decompressed) body, read in chunks; None as soon as it grows past `limit` bytes."""
    if fits_declared_length(response, limit):
        return await response.read()
    if "Content-Encoding" not in response.headers and response.content_length is not None:
        return None  # declared too long: refuse before reading a byte
    chunks: list[bytes] = []
    size = 0
    content = response.content
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def raise_connection_error(
    exc: BaseException, *, what: str, proxy: Proxy | None, timeouts: Timeouts, deadline: float
) -> NoReturn:
    """Raise our error for an aiohttp failure of `what` (``"GET /v1/..."``), naming the fix.

    The one mapping of aiohttp's connection errors. A proxy's refusal is raised without its
    aiohttp cause, whose request headers would show the proxy's credentials in a repr.
    """
    error = _connection_error(exc, what=what, proxy=proxy, timeouts=timeouts, deadline=deadline)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        raise error from None
    raise error from exc


def _connection_error(
    exc: BaseException, *, what: str, proxy: Proxy | None, timeouts: Timeouts, deadline: float
) -> APIConnectionError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TLSVerificationError(
            f"{what}: the server's certificate could not be verified "
            f"({exc.certificate_error}); {_CA_FIX}",
            request_sent=False,
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ProxyError(f"{what}: could not connect to the proxy {proxy}: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        hint = "; check the user and password in proxy= or HTTPS_PROXY" if exc.status == 407 else ""
        return ProxyError(
            f"{what}: the proxy {proxy} refused the tunnel with HTTP {exc.status} "
            f"{exc.message}{hint}",
            status=exc.status,
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(
            f"{what} timed out connecting after {timeouts.connect}s", request_sent=False
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"{what} could not connect: {exc.os_error}", request_sent=False)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return APITimeoutError(f"{what} got no bytes within the {timeouts.read}s read timeout")
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"{what} did not complete within its {deadline}s deadline")
    return APIConnectionError(f"{what} failed: {type(exc).__name__}: {exc}")
