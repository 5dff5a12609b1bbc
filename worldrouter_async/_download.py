"""Reading generated images, stored or inline: checked, size-limited, retried, never authenticated.

Every image is believed only once its bytes are one (the signature of a PNG, JPEG, WebP or
GIF file, whatever the content type said), and is saved atomically. One download, its
retries and redirects included, is bounded by `Timeouts.download` on the session's clock.

Downloads use their own aiohttp client (built by `_transports.aiohttp`, so the same proxy and
TLS trust as API calls) with no credentials at all, so the API key cannot reach the storage
origin whatever its URLs or redirects say. Redirects are followed by hand, a few at most:
never from https to http, and never into loopback, link-local or cloud-metadata addresses
unless the stored URL itself pointed there.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import aiohttp
import anyio
import anyio.to_thread
from yarl import URL

from ._clock import SYSTEM_CLOCK, Clock
from ._config import Limits, RetryPolicy, Timeouts
from ._errors import APIConnectionError, DownloadError
from ._hooks import Hooks
from ._images import ImageBytes, check_image, decode_inline, public_url
from ._retries import retrying
from ._transports.aiohttp import build_client, proxy_options, raise_connection_error, read_limited
from ._transports.network import Network
from .models import ImageData

_T = TypeVar("_T")

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_METADATA_HOSTS: Final = frozenset({"metadata", "metadata.google.internal"})
_METADATA_IPS: Final = frozenset({ipaddress.ip_address("fd00:ec2::254")})


def safe_name(raw: str, *, fallback: str = "image") -> str:
    """A file name from server data that cannot escape its directory or hide itself."""
    name = _UNSAFE.sub("_", raw).strip("._")[:120]
    return name or fallback


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it.

    The file is created with mode 0666 minus the umask (0644 under umask 022), as any
    other file the user's program writes; mkstemp's 0600 would hide images from others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


async def _internal_kind(host: str | None) -> str | None:
    """Which internal network `host` is in (loopback, link-local, metadata), else None.

    A name is resolved first; one that does not resolve here (it may only resolve at a
    proxy) counts as external.
    """
    if host is None:
        return None
    name = host.strip("[]").lower().rstrip(".")
    if name in _METADATA_HOSTS:
        return "metadata"
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    try:
        addresses = [ipaddress.ip_address(name)]
    except ValueError:
        try:
            infos = await anyio.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            return None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if address in _METADATA_IPS:
            return "metadata"
        if address.is_loopback or address.is_unspecified:
            return "loopback"
        if address.is_link_local:
            return "link-local"
    return None


async def check_redirect(source: URL, target: URL, *, origin: URL) -> None:
    """Refuse a storage redirect from `source` to `target` that could leak or reach inside.

    A redirect may stay in the internal network of the stored URL `origin` itself (see
    `_internal_kind`), but not enter another one.
    """
    public = public_url(str(target))
    if target.scheme not in ("http", "https") or not target.host:
        raise DownloadError(f"refusing a redirect to a non-HTTP URL {public!r}", url=public)
    if source.scheme == "https" and target.scheme == "http":
        raise DownloadError(
            f"refusing a redirect from https to plain http ({public}): the image could be "
            "read or replaced on the way",
            url=public,
        )
    kind = await _internal_kind(target.host)
    if kind is not None and kind != await _internal_kind(origin.host):
        raise DownloadError(
            f"refusing a redirect to the {kind} address {target.host!r} ({public}): stored "
            "images never live there, so the storage may be trying to reach inside your network",
            url=public,
        )


class Downloader:
    """Reads generated images (stored URLs or inline items), under a concurrency bound."""

    def __init__(
        self,
        *,
        timeouts: Timeouts,
        limits: Limits,
        retry: RetryPolicy,
        hooks: Hooks,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._timeouts = timeouts
        self._hooks = hooks
        self._max_bytes = limits.max_download_bytes
        self._slots = anyio.Semaphore(limits.max_concurrent_downloads)
        self._max_connections = limits.max_concurrent_downloads
        self._retry = retry
        self._clock = clock
        self._network: Network | None = None
        self._client: aiohttp.ClientSession | None = None

    def open(self, network: Network) -> None:
        """Use `network`'s proxy and TLS trust; the pool itself opens on the first download."""
        self._network = network

    async def aclose(self) -> None:
        """Close the download pool; idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _session(self, network: Network) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = build_client(
                network,
                # No total: the whole download, retries included, is bounded in `_fetch`.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeouts.connect, sock_read=self._timeouts.read
                ),
                max_connections=self._max_connections,
            )
        return self._client

    async def download_all(
        self, sources: Sequence[str | ImageData], directory: Path, *, stem: str
    ) -> tuple[Path, ...]:
        """Save each image as ``directory/stem-INDEX.ext`` concurrently; paths in order.

        Every image is attempted even when one fails; then the first error is raised.
        """
        return await _each(
            len(sources),
            lambda index: self.download(
                sources[index], directory / f"{stem}-{index}", name=f"{index} of {stem}"
            ),
        )

    async def read_all(
        self, sources: Sequence[str | ImageData], *, stem: str
    ) -> tuple[ImageBytes, ...]:
        """Read each image concurrently; in order. All are tried, then the first error raised."""
        return await _each(
            len(sources), lambda index: self.read(sources[index], name=f"{index} of {stem}")
        )

    async def download(self, source: str | ImageData, target: Path, *, name: str = "") -> Path:
        """Save one image to `target` plus the extension its bytes call for."""
        image = await self.read(source, name=name)
        path = target.with_name(target.name + image.extension)
        await anyio.to_thread.run_sync(_write_atomically, path, image.data)
        return path

    async def read(self, source: str | ImageData, *, name: str = "") -> ImageBytes:
        """One image's checked bytes: decoded if inline, else downloaded from its URL.

        `name` (``"INDEX of TASK"``) says which image an inline one is, in errors.
        """
        inline = f"the inline (b64_json) image {name}".rstrip()
        if isinstance(source, ImageData):
            if source.b64_json:  # the bytes are here already: no request, nothing to expire
                data = decode_inline(source.b64_json, what=inline, max_bytes=self._max_bytes)
                return check_image(data, url=None, what=inline, declared=None)
            if not source.url:
                raise DownloadError(f"image {name} has neither a url nor b64_json", url="")
            source = source.url
        if URL(source).scheme not in ("http", "https"):
            public = public_url(source)
            raise DownloadError(f"refusing to download a non-HTTP URL {public!r}", url=public)
        async with self._slots:
            return await self._fetch(source)

    async def _fetch(self, url: str) -> ImageBytes:
        """Download `url` with retries, all within `Timeouts.download` on the session's clock."""
        limit = self._timeouts.download
        with anyio.CancelScope() as scope:
            # A timer cancels the scope, as anyio's own deadlines do, but on the session's
            # clock: the retries wait on that clock, so the bound covers their waits too.
            timer = self._clock.call_later(limit, scope.cancel)
            try:
                return await retrying(
                    lambda _attempt: self._attempt(url),
                    policy=self._retry,
                    clock=self._clock,
                    hooks=self._hooks,
                )
            finally:
                timer.cancel()
        public = public_url(url)
        raise DownloadError(
            f"downloading {public} did not finish within Timeouts.download={limit}s (every "
            "attempt, retry wait and redirect counts); raise Timeouts.download if your "
            "images or your storage are that slow",
            url=public,
        )

    async def _attempt(self, url: str) -> ImageBytes:
        network = self._network
        if network is None:
            raise RuntimeError("the downloader is not open; use 'async with Session(...)'")
        client = self._session(network)
        origin = current = URL(url)
        for _ in range(_MAX_REDIRECTS + 1):
            public = public_url(str(current))
            proxy = network.proxy_for(current)
            try:
                async with client.get(
                    current, allow_redirects=False, **proxy_options(proxy)
                ) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        target = current.join(URL(response.headers["Location"]))
                        await check_redirect(current, target, origin=origin)
                        current = target
                        continue
                    data = await self._body(response, public)
                    return check_image(data, url=url, what=public, declared=response.content_type)
            except (aiohttp.ClientError, TimeoutError) as exc:
                try:
                    raise_connection_error(
                        exc,
                        what=f"downloading {public}",
                        proxy=proxy,
                        timeouts=self._timeouts,
                        deadline=self._timeouts.download,
                    )
                except APIConnectionError as error:
                    raise DownloadError(str(error), url=public) from error
        raise DownloadError(
            f"{public_url(url)} redirected more than {_MAX_REDIRECTS} times", url=public_url(url)
        )

    async def _body(self, response: aiohttp.ClientResponse, public: str) -> bytes:
        if response.status >= 300:
            raise DownloadError(
                f"downloading {public} failed with HTTP {response.status}",
                url=public,
                status=response.status,
            )
        data = await read_limited(response, self._max_bytes)
        if data is None:
            raise DownloadError(
                f"{public} is larger than max_download_bytes={self._max_bytes}; raise "
                "Limits.max_download_bytes if such images are expected",
                url=public,
                status=413,
            )
        return data


async def _each(count: int, one: Callable[[int], Awaitable[_T]]) -> tuple[_T, ...]:
    """``one(index)`` for every index concurrently, results in order.

    Every call runs to its end even when another fails; then the first `DownloadError`
    raised is raised.
    """
    results: list[_T | None] = [None] * count
    errors: list[DownloadError] = []

    async def run(index: int) -> None:
        try:
            results[index] = await one(index)
        except DownloadError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as task_group:
        for index in range(count):
            task_group.start_soon(run, index)
    if errors:
        raise errors[0]
    return tuple(result for result in results if result is not None)
