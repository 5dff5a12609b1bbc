"""Image bytes: believed only when their own signature says PNG, JPEG, WebP or GIF.

What a downloaded or inline image must be before the SDK hands it over: `image_type` reads
the magic number, `check_image` turns bytes into an `ImageBytes` or a `DownloadError`,
`decode_inline` decodes a ``b64_json`` image under the size limit. No network here; the
fetching, redirects and the download deadline are in `_download`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from attrs import define, field
from yarl import URL

from ._errors import DownloadError

_EXTENSIONS: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}


def public_url(url: str) -> str:
    """The URL without its query or fragment (signed URLs carry tokens there)."""
    return str(URL(url).with_query(None).with_fragment(None))


def image_type(data: bytes) -> str | None:
    """The content type the bytes' own signature shows (PNG, JPEG, WebP, GIF), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _size(data: bytes) -> str:
    return f"<{len(data)} bytes>"


def _public_or_none(url: str | None) -> str:
    return repr(None if url is None else public_url(url))


@define(frozen=True)
class ImageBytes:
    """One generated image in memory, as `Session.read` returns it.

    `content_type` is read from the bytes themselves (``image/png``, ``image/jpeg``,
    ``image/webp`` or ``image/gif``), not from what the storage claimed. `url` is the
    stored URL it came from, or None for an image the task answer carried inline
    (``b64_json``); the repr shows neither the bytes nor the URL's query (signed URLs
    carry tokens there).

    Example:
        >>> image = ImageBytes(b"GIF89a...", "image/gif", "https://cdn.example/a.gif?sig=x")
        >>> image.extension, image
        ('.gif', ImageBytes(data=<9 bytes>, content_type='image/gif', url='https://cdn.example/a.gif'))
    """

    data: bytes = field(repr=_size)
    content_type: str
    url: str | None = field(default=None, repr=_public_or_none)

    @property
    def extension(self) -> str:
        """The file extension for `content_type`: ``.png``, ``.jpg``, ``.webp`` or ``.gif``."""
        return _EXTENSIONS.get(self.content_type, ".bin")


def check_image(data: bytes, *, url: str | None, what: str, declared: str | None) -> ImageBytes:
    """`data` as an image if its bytes are one; else a `DownloadError` naming `what`.

    `declared` is the content type the storage sent, shown when the bytes disagree with it.
    """
    kind = image_type(data)
    if kind is not None:
        return ImageBytes(data, kind, url)
    sent = f" of {declared!r}" if declared else ""
    if not data:
        problem = f"an empty body (0 bytes{sent})"
    else:
        problem = (
            f"{len(data)} bytes{sent} that are not a PNG, JPEG, WebP or GIF image (they begin "
            f"{data[:8]!r}: an error page or a login portal?)"
        )
    raise DownloadError(
        f"{what} gave {problem}; nothing was saved or returned",
        url=public_url(url) if url else "",
    )


def decode_inline(text: str, *, what: str, max_bytes: int) -> bytes:
    """The bytes of an inline base64 image, refused past `max_bytes` before decoding."""
    if len(text) // 4 * 3 > max_bytes:
        raise DownloadError(
            f"{what} is larger than max_download_bytes={max_bytes}; raise "
            "Limits.max_download_bytes if such images are expected",
            url="",
        )
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise DownloadError(
            f"{what} is not valid base64 ({exc}); nothing was saved or returned", url=""
        ) from exc
