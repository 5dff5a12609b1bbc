"""A bulk run's output in an S3-compatible bucket (AWS S3, MinIO, R2 ...), through obstore.

`S3Output` implements the `Output` seam for ``s3://bucket/prefix``. Each image is one
PutObject of its whole bytes (never a multipart upload): S3 makes an object visible only
once its PUT completes, so no partial image ever appears under its final name, and a run
killed mid-upload leaves nothing to clean up. A rerun reads each journaled object back and
compares its SHA-256 with the journal's. The claim is created with ``If-None-Match: *``, so
of two runs claiming one prefix at once only one wins.

Credentials, region and endpoint come from the standard AWS environment (obstore reads
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` ...); this module only checks that some credentials are there and that
a plain ``http://`` endpoint is meant. The secret key is only checked for presence here,
never kept, so it cannot reach a message, a log line or a repr.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
from yarl import URL

from .._download import safe_name
from .._handles import ImageResult
from .._images import ImageBytes
from .._session import Session
from ._outputs import S3_SCHEME, SavedFile

if TYPE_CHECKING:
    from obstore.store import S3Store

#: How to get the library behind ``s3://`` outputs.
INSTALL_HINT: Final = 'pip install "worldrouter-async[s3]"'
_ENDPOINT_VARIABLES: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
_OTHER_CREDENTIALS: Final = (
    "AWS_WEB_IDENTITY_TOKEN_FILE",  # Kubernetes service accounts (IRSA)
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",  # ECS tasks
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
#: Seconds between two writes of the claim while a run goes on (each is one PUT).
CLAIM_INTERVAL: Final = 2.0


def _obstore() -> Any:
    try:
        import obstore  # an optional extra, imported when a bucket is used
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"writing images to an s3:// output needs obstore, which the s3 extra installs: "
            f"{INSTALL_HINT}"
        ) from exc
    return obstore


def _first_line(exc: BaseException) -> str:
    """An obstore error's first line (the rest is a debug dump of the request)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def store_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """The client options the AWS environment calls for, or ValueError saying what to set.

    Some credentials must be there (a key pair, a web identity token, or container
    credentials): without them the client would wait on the EC2 metadata service. A plain
    ``http://`` endpoint is allowed on loopback, elsewhere only with ``AWS_ALLOW_HTTP=true``.
    """
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
        raise ValueError(f"an s3:// output needs {missing} too: set it in the environment")
    if not key and not any(environ.get(name) for name in _OTHER_CREDENTIALS):
        raise ValueError(
            "an s3:// output needs credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for MinIO, R2 or another "
            "S3-compatible storage) in the environment"
        )
    endpoint = next((environ[name] for name in _ENDPOINT_VARIABLES if environ.get(name)), None)
    if endpoint is None or not endpoint.startswith("http://"):
        return {}
    allowed = environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true")
    if not allowed and not _is_loopback(URL(endpoint).host):
        raise ValueError(
            f"AWS_ENDPOINT_URL {endpoint} is plain http: images and signed requests would "
            "cross the network unencrypted. Use https, or set AWS_ALLOW_HTTP=true if that "
            "network is trusted"
        )
    return {"allow_http": True}


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_url(url: str) -> tuple[str, str]:
    """The bucket and prefix of ``s3://bucket/prefix`` (prefix without slashes at its ends)."""
    bucket, _, prefix = url.removeprefix(S3_SCHEME).partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; write the output as s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


class S3Output:
    """A bucket prefix holding a run's images (``s3://bucket/prefix/KEY-INDEX.EXT``)."""

    claim_interval: float = CLAIM_INTERVAL

    def __init__(self, bucket: str, prefix: str, store: S3Store) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._store = store
        self._obstore = _obstore()

    @classmethod
    def from_url(cls, url: str) -> S3Output:
        """The output `url` names, with credentials from the process's AWS environment.

        Raises `ModuleNotFoundError` naming the ``s3`` extra when obstore is missing, and
        ValueError when the URL or the environment cannot work.
        """
        obstore = _obstore()
        bucket, prefix = parse_url(url)
        options = store_options(os.environ)
        store = obstore.store.S3Store(
            bucket,
            prefix=prefix or None,
            client_options=options,
            retry_config={"max_retries": 3},
        )
        return cls(bucket, prefix, store)

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        return f"S3Output({str(self)!r})"

    def location(self, name: str) -> str:
        return f"{self}/{name}"

    @property
    def claim_hint(self) -> str:
        return (
            ". A bucket cannot tell whether a journal on some machine's disk still exists: if "
            f"that journal is gone for good, delete the claim object {self}/.worldrouter-job "
            "and rerun with new_journal=True (CLI: --new-journal)"
        )

    async def check(self) -> None:
        """List the prefix once: proves the bucket exists and the credentials are accepted."""
        try:
            await self._obstore.list_with_delimiter_async(self._store)
        except (self._obstore.exceptions.BaseError, OSError) as exc:
            raise OSError(f"cannot reach {self}: {_first_line(exc)}") from None

    async def save(
        self, session: Session, source: ImageResult | Sequence[str], *, stem: str
    ) -> list[SavedFile]:
        images = await _read(session, source)
        stem = safe_name(stem)  # as a local download names its files
        saved = [
            _saved(self, f"{stem}-{index}{image.extension}", image)
            for index, image in enumerate(images)
        ]
        async with anyio.create_task_group() as task_group:
            for file, image in zip(saved, images, strict=True):
                task_group.start_soon(self._put, file.name, image)
        return saved

    async def _put(self, name: str, image: ImageBytes) -> None:
        try:
            await self._obstore.put_async(
                self._store,
                name,
                image.data,
                use_multipart=False,  # one PUT: the object appears whole, or not at all
                attributes={"Content-Type": image.content_type},
            )
        except self._obstore.exceptions.BaseError as exc:
            raise self._write_failed(name, exc) from None

    async def intact(self, names: Sequence[str], digests: Sequence[str | None]) -> bool:
        for name, digest in zip(names, digests, strict=True):
            try:
                found = await self._obstore.get_async(self._store, name)
                data = bytes(await found.bytes_async())
            except (self._obstore.exceptions.BaseError, OSError):
                return False  # missing, or unreadable now: downloading again is safe
            if not data or (digest is not None and hashlib.sha256(data).hexdigest() != digest):
                return False
        return True

    async def remove_partials(self, *, keep: Collection[str] | None = None) -> None:
        """Nothing to do: a PUT that did not complete leaves no object behind."""

    # --- the claim's place (synchronous: called from worker threads) -----------------

    def read_text(self, name: str) -> str | None:
        try:
            found = self._obstore.get(self._store, name)
            return bytes(found.bytes()).decode("utf-8")
        except FileNotFoundError:
            return None
        except (self._obstore.exceptions.BaseError, OSError) as exc:
            raise OSError(_first_line(exc)) from None

    def create_text(self, name: str, text: str) -> bool:
        errors = self._obstore.exceptions
        try:
            self._obstore.put(self._store, name, text.encode(), mode="create")  # If-None-Match
        except (errors.AlreadyExistsError, errors.PreconditionError):
            return False
        except errors.BaseError as exc:
            raise self._write_failed(name, exc) from None
        return True

    def replace_text(self, name: str, text: str) -> None:
        try:
            self._obstore.put(self._store, name, text.encode(), mode="overwrite")
        except self._obstore.exceptions.BaseError as exc:
            raise self._write_failed(name, exc) from None

    def _write_failed(self, name: str, exc: BaseException) -> OSError:
        return OSError(f"writing {self.location(name)} failed: {_first_line(exc)}")

    def file_names(self) -> list[str]:
        names: list[str] = []
        try:
            for chunk in self._obstore.list(self._store):
                names.extend(str(meta["path"]) for meta in chunk if "/" not in meta["path"])
        except (self._obstore.exceptions.BaseError, OSError) as exc:
            raise OSError(f"cannot list {self}: {_first_line(exc)}") from None
        return names

    def journal_exists(self, journal: str) -> bool:
        """Always True: the journal of another run may be on another machine's disk."""
        return True


def _saved(output: S3Output, name: str, image: ImageBytes) -> SavedFile:
    return SavedFile(name, hashlib.sha256(image.data).hexdigest(), output.location(name))


async def _read(session: Session, source: ImageResult | Sequence[str]) -> list[ImageBytes]:
    """The checked bytes of every image of `source`, read concurrently, in order."""
    if isinstance(source, ImageResult):
        return list(await session.read(source))
    images: list[ImageBytes | None] = [None] * len(source)

    async def read(index: int) -> None:
        (images[index],) = await session.read(source[index])

    async with anyio.create_task_group() as task_group:
        for index in range(len(source)):
            task_group.start_soon(read, index)
    return [image for image in images if image is not None]
