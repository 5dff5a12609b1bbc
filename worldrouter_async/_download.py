"""Streaming stored images to disk: atomic, size-limited, retried, never authenticated.

Downloads use their own aiohttp client (built by `_client.Network`, so the same proxy and
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
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp
import anyio
import anyio.to_thread
from yarl import URL

from ._client import Network, proxy_options, raise_connection_error, read_limited
from ._config import Limits, RetryPolicy, Timeouts
from ._errors import APIConnectionError, DownloadError
from ._retries import retrying

_EXTENSIONS: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_METADATA_HOSTS: Final = frozenset({"metadata", "metadata.google.internal"})
_METADATA_IPS: Final = frozenset({ipaddress.ip_address("fd00:ec2::254")})


def safe_name(raw: str, *, fallback: str = "image") -> str:
    """A file name from server data that cannot escape its directory or hide itself."""
    name = _UNSAFE.sub("_", raw).strip("._")[:120]
    return name or fallback


def _public_url(url: str) -> str:
    """The URL without its query or fragment (signed URLs carry tokens there)."""
    return str(URL(url).with_query(None).with_fragment(None))


def _extension(content_type: str, url: str) -> str:
    ext = _EXTENSIONS.get(content_type.split(";")[0].strip().lower())
    if ext:
        return ext
    suffix = Path(URL(url).path).suffix.lower()
    return suffix if suffix in _EXTENSIONS.values() else ".bin"


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


def _is_image(content_type: str) -> bool:
    return content_type.startswith("image/") or content_type == "application/octet-stream"


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
    public = _public_url(str(target))
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
    """Fetches stored image URLs into files, under a concurrency bound."""

    def __init__(self, *, timeouts: Timeouts, limits: Limits, retry: RetryPolicy) -> None:
        self._timeouts = timeouts
        self._max_bytes = limits.max_download_bytes
        self._slots = anyio.Semaphore(limits.max_concurrent_downloads)
        self._max_connections = limits.max_concurrent_downloads
        self._retry = retry
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
            self._client = network.client(
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.download,
                    sock_connect=self._timeouts.connect,
                    sock_read=self._timeouts.read,
                ),
                max_connections=self._max_connections,
            )
        return self._client

    async def download_all(
        self, urls: Sequence[str], directory: Path, *, stem: str
    ) -> tuple[Path, ...]:
        """Download each URL to ``directory/stem-INDEX.ext`` concurrently; paths in order.

        Every download is attempted even when one fails; then the first error is raised.
        """
        paths: list[Path | None] = [None] * len(urls)
        errors: list[DownloadError] = []

        async def one(index: int, url: str) -> None:
            try:
                paths[index] = await self.download(url, directory / f"{stem}-{index}")
            except DownloadError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as task_group:
            for index, url in enumerate(urls):
                task_group.start_soon(one, index, url)
        if errors:
            raise errors[0]
        return tuple(path for path in paths if path is not None)

    async def download(self, url: str, target: Path) -> Path:
        """Download `url` to `target` plus the extension its content type implies."""
        if URL(url).scheme not in ("http", "https"):
            raise DownloadError(f"refusing to download a non-HTTP URL {url!r}", url=url)
        async with self._slots:
            data, content_type = await retrying(
                lambda _attempt: self._fetch(url), policy=self._retry
            )
        path = target.with_name(target.name + _extension(content_type, url))
        await anyio.to_thread.run_sync(_write_atomically, path, data)
        return path

    async def _fetch(self, url: str) -> tuple[bytes, str]:
        network = self._network
        if network is None:
            raise RuntimeError("the downloader is not open; use 'async with Session(...)'")
        client = self._session(network)
        origin = current = URL(url)
        for _ in range(_MAX_REDIRECTS + 1):
            public = _public_url(str(current))
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
                    return await self._body(response, public)
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
            f"{_public_url(url)} redirected more than {_MAX_REDIRECTS} times", url=_public_url(url)
        )

    async def _body(self, response: aiohttp.ClientResponse, public: str) -> tuple[bytes, str]:
        if response.status >= 300:
            raise DownloadError(
                f"downloading {public} failed with HTTP {response.status}",
                url=public,
                status=response.status,
            )
        content_type = response.content_type
        if not _is_image(content_type):
            raise DownloadError(
                f"{public} answered {content_type!r}, not an image (an error page or a "
                "login portal?); nothing was saved",
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
        return data, content_type
