"""Where a bulk run saves its images: the `Output` seam, with a local directory behind it.

The finisher, the claim and the runner reach their output only through `Output`, so a
local directory (`LocalOutput`) and a bucket prefix (`S3Output` in ``_s3.py``) behave the
same: images are written whole under their final names, the journal records their names
(relative to the output) and SHA-256 digests, a rerun checks each one and downloads again
what is missing or changed, and ``.worldrouter-job`` claims the output for one journal.

`open_output` reads ``--out``: ``s3://bucket/prefix`` is a bucket, anything else a directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import anyio.to_thread
from attrs import define

from .._download import partial_writer
from .._errors import InvalidRequestError
from .._handles import ImageResult
from .._session import Session
from ._names import file_digest

#: The scheme of an output in a bucket.
S3_SCHEME = "s3://"


@define(frozen=True)
class SavedFile:
    """One image an output holds: its journal name, SHA-256 digest, and where it is."""

    name: str  # relative to the output: the name the journal records
    digest: str
    location: str  # a path, or an s3:// URL: what an outcome shows


class ClaimPlace(Protocol):
    """What the output claim (``_claim.py``) needs from an output, called off the event loop.

    Every method is synchronous: the claim is taken in a worker thread before the run, and
    moved from the journal's commit thread after each commit that adds rows or sends.
    """

    #: Seconds between two moves of the claim (0: after every commit, in the commit's thread).
    claim_interval: float

    @property
    def claim_hint(self) -> str:
        """Appended to the refusal of an output another journal owns."""
        ...

    def location(self, name: str) -> str:
        """Where the file `name` (as a journal names it) is: a path, or an s3:// URL."""
        ...

    def read_text(self, name: str) -> str | None:
        """The text of `name`, or None when there is none; OSError when it cannot be read."""
        ...

    def create_text(self, name: str, text: str) -> bool:
        """Write `name` unless it exists (atomically); False when it already did."""
        ...

    def replace_text(self, name: str, text: str) -> None:
        """Write `name` whole, replacing what was there."""
        ...

    def file_names(self) -> list[str]:
        """The names of the files directly in the output (none when it does not exist)."""
        ...

    def journal_exists(self, journal: str) -> bool:
        """True when the journal file named in a claim still exists, as far as this can tell."""
        ...


class Output(ClaimPlace, Protocol):
    """Where a run saves its images: a local directory or a bucket prefix."""

    def __str__(self) -> str:
        """The output as the user gave it (a directory, or ``s3://bucket/prefix``)."""
        ...

    async def save(
        self, session: Session, source: ImageResult | Sequence[str], *, stem: str
    ) -> list[SavedFile]:
        """Save each image of `source` (inline ones included) as ``STEM-INDEX.EXT``, in
        order, each whole: no partial file is ever visible under its final name. Raises
        `DownloadError` or OSError."""
        ...

    async def intact(self, names: Sequence[str], digests: Sequence[str | None]) -> bool:
        """True when every named file exists, is not empty, and has its digest (if known)."""
        ...

    async def remove_partials(self, *, keep: Collection[str] | None = None) -> None:
        """Delete what a run killed mid-save left behind: all of it (`keep` None, no one
        else writes here), or only what writers not in `keep` (``HOST-PID`` tags of the
        live workers of a shared job) left."""


class LocalOutput:
    """A local directory: images are written to a temporary file, then renamed."""

    claim_interval: float = 0.0
    claim_hint: str = ""  # the refusal's own advice is all a directory needs

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __str__(self) -> str:
        return str(self.directory)

    def __repr__(self) -> str:
        return f"LocalOutput({str(self.directory)!r})"

    async def save(
        self, session: Session, source: ImageResult | Sequence[str], *, stem: str
    ) -> list[SavedFile]:
        images = source.images if isinstance(source, ImageResult) else source
        paths = await session.download_urls(images, self.directory, stem=stem)
        digests = await anyio.to_thread.run_sync(lambda: [file_digest(p) for p in paths])
        return [
            SavedFile(path.name, digest, str(path))
            for path, digest in zip(paths, digests, strict=True)
        ]

    async def intact(self, names: Sequence[str], digests: Sequence[str | None]) -> bool:
        paths = [self.directory / name for name in names]

        def check() -> bool:
            return all(
                path.is_file()
                and path.stat().st_size > 0  # an empty body was never an image
                and (digest is None or file_digest(path) == digest)
                for path, digest in zip(paths, digests, strict=True)
            )

        return await anyio.to_thread.run_sync(check)

    def location(self, name: str) -> str:
        return str(self.directory / name)  # an absolute name (older journals) stays as is

    async def remove_partials(self, *, keep: Collection[str] | None = None) -> None:
        await anyio.to_thread.run_sync(self._remove_partials, keep)

    def _remove_partials(self, keep: Collection[str] | None) -> None:
        """Delete the ``.*.part`` files a run killed mid-download left behind; with `keep`,
        only those named by a writer not in it (a partial naming no writer is kept)."""
        if self.directory.is_dir():
            for part in self.directory.glob(".*.part"):
                writer = partial_writer(part.name)
                if keep is None or (writer is not None and writer not in keep):
                    part.unlink(missing_ok=True)

    # --- the claim's place -----------------------------------------------------------

    def read_text(self, name: str) -> str | None:
        try:
            return (self.directory / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def create_text(self, name: str, text: str) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self._write(name, text, exclusive=True)

    def replace_text(self, name: str, text: str) -> None:
        self._write(name, text, exclusive=False)

    def _write(self, name: str, text: str, *, exclusive: bool) -> bool:
        path = self.directory / name
        temp = path.with_name(f"{name}.{os.getpid()}.tmp")
        try:
            temp.write_text(text, encoding="utf-8")
            if exclusive:
                os.link(temp, path)  # fails if another run claimed the directory first
            else:
                os.replace(temp, path)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
        return True

    def file_names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        with os.scandir(self.directory) as entries:
            return [entry.name for entry in entries if entry.is_file()]

    def journal_exists(self, journal: str) -> bool:
        return Path(journal).exists()


def is_bucket(out: str | os.PathLike[str]) -> bool:
    """True when `out` names a bucket prefix (``s3://...``) rather than a directory.

    Example:
        >>> is_bucket("s3://bucket/images"), is_bucket("images")
        (True, False)
    """
    return isinstance(out, str) and out.startswith(S3_SCHEME)


async def check_bucket(url: str) -> None:
    """List the bucket prefix `url` once, before a run pays for anything: proves that the
    bucket exists and that the AWS environment's credentials are accepted.

    Raises `ModuleNotFoundError` naming the ``s3`` extra when it is missing,
    `InvalidRequestError` for a URL or AWS environment that cannot work, and `OSError`
    when the bucket cannot be reached.

    Example:
        >>> await check_bucket("s3://bucket/images")  # doctest: +SKIP
    """
    from ._s3 import S3Output  # obstore is imported only for a bucket

    output = open_output(url)
    assert isinstance(output, S3Output), url  # a bucket URL opens a bucket
    await output.check()


def open_output(out: str | os.PathLike[str]) -> Output:
    """The output `out` names: ``s3://bucket/prefix`` (needs the ``s3`` extra), else a directory.

    Raises `ModuleNotFoundError` naming the extra when it is missing, and
    `InvalidRequestError` for a bucket URL or AWS environment that cannot work.
    """
    if is_bucket(out):
        from ._s3 import S3Output  # obstore is imported only for a bucket

        try:
            return S3Output.from_url(str(out))
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
    if Path(out).parts[:1] == ("s3:",):  # Path("s3://b/p") folded the URL into "s3:/b/p"
        raise InvalidRequestError(
            f"out_dir {out!r} looks like a bucket URL made into a path; pass it as a string, "
            "'s3://BUCKET/PREFIX'"
        )
    return LocalOutput(Path(out))
