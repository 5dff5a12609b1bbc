"""The download front-end of `Session`: a result's images saved to disk or read into memory.

`SessionDownloads` holds the public methods `download`, `download_urls` and `read`, which
`Session` inherits; they choose the target (a directory, a file name, memory) and hand the
fetching to the session's `Downloader` (`_download.py`: the credential-free client,
redirects, retries, the deadline and the checks on the bytes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anyio
from yarl import URL

from ._download import Downloader, safe_name
from ._handles import ImageResult
from ._images import ImageBytes
from ._lifecycle import Lifecycle
from .models import ImageData

#: Suffixes a single-URL `download` target may carry: the image's own replaces them.
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bin")


class SessionDownloads:
    """`Session`'s methods that fetch stored and inline images."""

    _downloader: Downloader
    _life: Lifecycle

    async def download(
        self, source: ImageResult | str, dest: str | os.PathLike[str]
    ) -> tuple[Path, ...]:
        """Save images to disk atomically; the extension follows the image's bytes.

        For an `ImageResult`, `dest` is a directory and files are named
        ``TASKID-INDEX.ext``, one per image (stored or inline); for a single URL, `dest` is
        the file path (or a directory). The storage origin never receives the API key. An
        empty body, or bytes that are not a PNG, JPEG, WebP or GIF image, is a `DownloadError`.

        Example:
            >>> paths = await session.download(result, "out/")  # doctest: +SKIP
        """
        self._life.check_open()
        target = Path(dest)
        if isinstance(source, ImageResult):
            return await self.download_urls(source.images, target, stem=source.task_id)
        if await anyio.Path(target).is_dir():
            target = target / safe_name(Path(URL(source).path).stem)
        elif target.suffix.lower() in _IMAGE_SUFFIXES:
            target = target.with_suffix("")
        return (await self._downloader.download(source, target),)

    async def download_urls(
        self,
        urls: Sequence[str | ImageData],
        directory: str | os.PathLike[str],
        *,
        stem: str,
    ) -> tuple[Path, ...]:
        """Save `urls` as ``directory/STEM-INDEX.ext`` (stem sanitized), paths in order.

        Each item is a stored URL or an `ImageData` (an inline ``b64_json`` one is decoded).
        """
        self._life.check_open()
        return await self._downloader.download_all(urls, Path(directory), stem=safe_name(stem))

    async def read(self, source: ImageResult | str) -> tuple[ImageBytes, ...]:
        """The images' bytes in memory, checked and bounded as `download` does; in order.

        For a web app that streams images or hands them to Pillow without a file: the
        storage never receives the API key, redirects are checked, each image is capped at
        `Limits.max_download_bytes`, one download with its retries takes at most
        `Timeouts.download`, and bytes that are not an image raise `DownloadError`.
        `source` is a result (every image, inline ones included) or one stored URL.

        Example:
            >>> (image,) = await session.read(result)  # doctest: +SKIP
            >>> picture = PIL.Image.open(io.BytesIO(image.data))  # doctest: +SKIP
        """
        self._life.check_open()
        if isinstance(source, ImageResult):
            return await self._downloader.read_all(source.images, stem=source.task_id)
        return (await self._downloader.read(source),)
