"""Streaming stored images to disk: atomic, size-limited, retried, never authenticated.

Downloads use their own aiohttp client with no credentials at all, so the API key cannot
reach the storage origin whatever its URLs or redirects say.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp
import anyio
import anyio.to_thread
from yarl import URL

from ._config import Limits, RetryPolicy, Timeouts
from ._errors import DownloadError
from ._transport import USER_AGENT, logger

_EXTENSIONS: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK: Final = 64 * 1024


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
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class Downloader:
    """Fetches stored image URLs into files, under a concurrency bound."""

    def __init__(self, *, timeouts: Timeouts, limits: Limits, retry: RetryPolicy) -> None:
        self._timeouts = timeouts
        self._max_bytes = limits.max_download_bytes
        self._slots = anyio.Semaphore(limits.max_concurrent_downloads)
        self._retry = retry
        self._client: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        """Close the download pool; idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.download,
                    connect=self._timeouts.connect,
                    sock_read=self._timeouts.read,
                ),
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
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
            attempt = 1
            while True:
                try:
                    data, content_type = await self._fetch(url)
                    break
                except DownloadError as exc:
                    transient = exc.status is None or exc.status in (408, 429) or exc.status >= 500
                    if not transient or attempt >= self._retry.attempts:
                        raise
                    logger.debug("retrying download of %s: %s", _public_url(url), exc)
                    await anyio.sleep(self._retry.backoff(attempt))
                    attempt += 1
        path = target.with_name(target.name + _extension(content_type, url))
        await anyio.to_thread.run_sync(_write_atomically, path, data)
        return path

    async def _fetch(self, url: str) -> tuple[bytes, str]:
        public = _public_url(url)
        try:
            async with self._session().get(url) as response:
                if response.status >= 400:
                    raise DownloadError(
                        f"downloading {public} failed with HTTP {response.status}",
                        url=public,
                        status=response.status,
                    )
                if (response.content_length or 0) > self._max_bytes:
                    raise self._too_large(public)
                data = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    data += chunk
                    if len(data) > self._max_bytes:
                        raise self._too_large(public)
                return bytes(data), response.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DownloadError(
                f"downloading {public} failed: {type(exc).__name__}: {exc}", url=public
            ) from exc

    def _too_large(self, url: str) -> DownloadError:
        return DownloadError(
            f"{url} is larger than max_download_bytes={self._max_bytes}; raise "
            "Limits.max_download_bytes if such images are expected",
            url=url,
            status=413,
        )
