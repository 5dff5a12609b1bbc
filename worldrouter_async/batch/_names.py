"""File names for a bulk job's images: readable, and distinct for distinct request keys.

A key that is already a safe, lower-case ASCII file name is used as is. Any other key is
sanitized and gets ``--`` plus a hash of the raw key, so ``a/b``, ``a_b``, ``a b`` and ``A_B``
land in four files, on case-insensitive file systems too. A key that merely looks like a
hashed name gets a hash of its own, so a raw key can never meet a hashed one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

_SAFE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")
_UNSAFE_RUN: Final = re.compile(r"[^A-Za-z0-9._-]+")
_HASHED: Final = re.compile(r"--[0-9a-f]{10}$")
_WINDOWS_RESERVED: Final = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}
)


def file_stem(key: str) -> str:
    """The file stem of request `key`; images are saved as ``STEM-INDEX.EXT``."""
    if (
        _SAFE.fullmatch(key)
        and not key.endswith((".", "_"))
        and not _HASHED.search(key)
        and key.split(".")[0] not in _WINDOWS_RESERVED
    ):
        return key
    readable = _UNSAFE_RUN.sub("_", key).strip("._-")[:60] or "id"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{readable}--{digest}"


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, to tell later whether the file is still the one saved."""
    sha = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
