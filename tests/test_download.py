"""Downloads and reads: real images from the storage origin or inline, checked, atomic,
bounded in size and time, never authenticated."""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from worldrouter_async import (
    DownloadError,
    ImageBytes,
    ImageRequest,
    Limits,
    RetryPolicy,
    Session,
    Timeouts,
)
from worldrouter_async._download import check_redirect, safe_name
from worldrouter_async._retries import is_transient
from worldrouter_async.batch import BatchItem, BatchRunner, OutcomeKind, Source, read_rows
from worldrouter_async.batch.journal import SqliteFile
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator, FakeClock
from worldrouter_async.testing._png import PNG_SIGNATURE

from .conftest import SessionFactory
from .hostile import JPEG_BYTES, HostileServer

pytestmark = pytest.mark.anyio


async def test_result_downloads_to_png_files(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Every URL of a result becomes TASKID-INDEX.png holding real PNG bytes."""
    result = await session.generate("gpt-image-2", "a star", n=3)
    paths = await session.download(result, tmp_path / "out")
    assert [p.name for p in paths] == [f"{result.task_id}-{i}.png" for i in range(3)]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind
    assert emulator.counters.storage_requests == 3
    assert emulator.counters.storage_auth_headers == 0


async def test_single_url_to_a_file_path(session: Session, tmp_path: Path) -> None:
    """A URL saved to 'cat.png' keeps that name; the extension follows the content type."""
    result = await session.generate("gpt-image-2", "a cat")
    (path,) = await session.download(result.urls[0], tmp_path / "cat.png")
    assert path == tmp_path / "cat.png"
    (path,) = await session.download(result.urls[0], tmp_path)
    assert path == tmp_path / "0.png"


async def test_transient_storage_errors_are_retried(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """5xx and dropped connections from storage are retried like any GET."""
    result = await session.generate("gpt-image-2", "a star")
    emulator.inject("503", route="storage")
    emulator.inject("drop", route="storage")
    (path,) = await session.download(result, tmp_path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert emulator.counters.faults["503"] == 1


async def test_missing_image_is_not_retried(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A 404 from storage raises DownloadError at once with the status."""
    result = await session.generate("gpt-image-2", "a star")
    emulator.expire(result.task_id)
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        await session.download(result, tmp_path)
    assert caught.value.status == 404
    assert emulator.counters.storage_requests == 1


async def test_size_limit(make_session: SessionFactory, tmp_path: Path) -> None:
    """An image over max_download_bytes is refused and nothing is written."""
    async with make_session(limits=Limits(max_download_bytes=10)) as session:
        result = await session.generate("gpt-image-2", "a star")
        with pytest.raises(DownloadError, match="larger than max_download_bytes=10"):
            await session.download(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_query_strings_stay_out_of_errors(session: Session, tmp_path: Path) -> None:
    """Signed-URL tokens never appear in error messages."""
    with pytest.raises(DownloadError) as caught:
        await session.download(f"{session.base_url}/nope.png?sig=TOKEN123", tmp_path / "x")
    assert "TOKEN123" not in str(caught.value)


async def test_non_http_urls_are_refused(session: Session, tmp_path: Path) -> None:
    """file:// and friends from server data are never followed."""
    with pytest.raises(DownloadError, match="non-HTTP"):
        await session.download("file:///etc/passwd", tmp_path / "x")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("imgtask_1", "imgtask_1"),
        ("...", "image"),
        ("a/b\\c", "a_b_c"),
        (".hidden", "hidden"),
    ],
)
def test_safe_names_cannot_escape(raw: str, expected: str) -> None:
    """Server-provided IDs are reduced to plain file names."""
    assert safe_name(raw) == expected


async def _download_from(server: HostileServer, name: str, tmp_path: Path, **options: Any) -> Path:
    async with Session("k", server.base_url, retry=FAST_RETRY, **options) as session:
        (path,) = await session.download(f"{server.origin}/img/{name}", tmp_path / "image")
    return path


async def test_redirect_within_the_storage_network_is_followed(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A storage redirect to another loopback path is fine: the stored URL was there already."""
    hostile.redirects["moved"] = "/img/ok"
    path = await _download_from(hostile, "moved", tmp_path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert hostile.paths == ["/img/moved", "/img/ok"]


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local address '169.254.169.254'"),
        ("http://[fe80::1]/x", "link-local address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata address"),
        ("ftp://127.0.0.1/x", "non-HTTP URL"),
    ],
)
async def test_redirects_into_internal_networks_are_refused(
    hostile: HostileServer, tmp_path: Path, target: str, text: str
) -> None:
    """Storage cannot bounce a download into metadata or link-local services; nothing saved."""
    hostile.redirects["evil"] = target
    with pytest.raises(DownloadError, match=re.escape(text)) as caught:
        await _download_from(hostile, "evil", tmp_path)
    assert not is_transient(caught.value)
    assert hostile.paths == ["/img/evil"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("https://203.0.113.7/a.png", "https://127.0.0.1/a.png"),
        ("https://203.0.113.7/a.png", "https://localhost:8443/a.png"),
        ("https://203.0.113.7/a.png", "https://[::1]/a.png"),
        ("https://203.0.113.7/a.png", "https://0.0.0.0/a.png"),
        ("http://127.0.0.1/a.png", "http://169.254.169.254/latest/"),
    ],
)
async def test_redirect_from_outside_into_loopback_is_refused(source: str, target: str) -> None:
    """Storage elsewhere may not redirect to this machine (the stored URL decides); no I/O."""
    with pytest.raises(DownloadError, match=r"refusing a redirect to the"):
        await check_redirect(URL(source), URL(target), origin=URL(source))


async def test_redirect_loop_is_cut_after_a_few_hops(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """At most 5 redirects are followed."""
    hostile.redirects["loop"] = "/img/loop"
    with pytest.raises(DownloadError, match="redirected more than 5 times"):
        await _download_from(hostile, "loop", tmp_path)
    assert len(hostile.paths) == 6


async def test_https_to_http_redirect_is_refused(
    server_tls: ssl.SSLContext, ca_bundle: Path, hostile: HostileServer, tmp_path: Path
) -> None:
    """An https storage URL never continues over plain http."""
    async with HostileServer(ssl=server_tls) as secure:
        secure.redirects["down"] = f"{hostile.origin}/img/ok"
        with pytest.raises(DownloadError, match="from https to plain http"):
            await _download_from(secure, "down", tmp_path, verify=ca_bundle)
        secure.redirects["same"] = "/img/ok"
        path = await _download_from(secure, "same", tmp_path, verify=ca_bundle)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert hostile.paths == []


async def test_html_body_is_a_download_error_not_a_file(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A 200 HTML page (a portal, an error page) is refused at once and never saved."""
    with pytest.raises(DownloadError, match="of 'text/html' that are not a PNG"):
        await _download_from(hostile, "page", tmp_path)
    assert hostile.paths == ["/img/page"]
    assert list(tmp_path.iterdir()) == []


async def test_saved_files_get_the_usual_permissions(session: Session, tmp_path: Path) -> None:
    """Images are 0644 under umask 022, like any file the program writes (not mkstemp's 0600)."""
    previous = os.umask(0o022)
    try:
        result = await session.generate("gpt-image-2", "a star")
        (path,) = await session.download(result, tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


async def _read_from(server: HostileServer, name: str, **options: Any) -> ImageBytes:
    async with Session("k", server.base_url, retry=FAST_RETRY, **options) as session:
        (image,) = await session.read(f"{server.origin}/img/{name}?sig=SECRET")
    return image


async def _save_from(server: HostileServer, name: str, tmp_path: Path, **options: Any) -> Path:
    async with Session("k", server.base_url, retry=FAST_RETRY, **options) as session:
        (path,) = await session.download(f"{server.origin}/img/{name}?sig=SECRET", tmp_path / "x")
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty", "gave an empty body (0 bytes of 'image/png')"),
        ("fakepng", "26 bytes of 'image/png' that are not a PNG, JPEG, WebP or GIF image"),
    ],
)
async def test_an_empty_or_non_image_body_is_a_download_error(
    hostile: HostileServer, tmp_path: Path, name: str, text: str
) -> None:
    """200 image/png with 0 bytes, or with an error page, saves nothing and names the URL."""
    with pytest.raises(DownloadError, match=re.escape(text)) as caught:
        await _save_from(hostile, name, tmp_path)
    assert caught.value.url == f"{hostile.origin}/img/{name}"
    assert f"{hostile.origin}/img/{name} gave" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert not is_transient(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "suffix", "signature"),
    [("jpeg", ".jpg", JPEG_BYTES[:3]), ("octet", ".png", PNG_SIGNATURE)],
)
async def test_the_extension_follows_the_bytes_not_the_content_type(
    hostile: HostileServer, tmp_path: Path, name: str, suffix: str, signature: bytes
) -> None:
    """JPEG bytes sent as image/png become .jpg; a PNG sent as binary/octet-stream is kept."""
    path = await _save_from(hostile, name, tmp_path)
    assert path == tmp_path / f"x{suffix}"
    assert path.read_bytes().startswith(signature)


@pytest.mark.parametrize("read", [True, False], ids=["read", "download"])
async def test_a_trickling_image_ends_at_the_download_deadline(
    hostile: HostileServer, tmp_path: Path, read: bool
) -> None:
    """A body trickling one byte every 50 ms (no read timeout ever) ends at Timeouts.download."""
    timeouts = Timeouts(download=0.5)
    fetch = (
        _read_from(hostile, "trickle", timeouts=timeouts)
        if read
        else _save_from(hostile, "trickle", tmp_path, timeouts=timeouts)
    )
    with pytest.raises(DownloadError, match=r"did not finish within Timeouts\.download=0\.5s"):
        await fetch
    assert list(tmp_path.iterdir()) == []


async def test_retries_of_a_stalling_image_share_one_download_deadline(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A body that stalls past the read timeout is retried, but only until Timeouts.download.

    With 50 attempts of at least 0.1 s each, a per-attempt bound would take over 5 s and end
    in a read timeout; the whole download ends at its 1.5 s bound instead, after a few.
    """
    retry = RetryPolicy(attempts=50, base=0.001, cap=0.01)
    with pytest.raises(DownloadError, match=r"within Timeouts\.download=1\.5s"):
        async with Session(
            "k", hostile.base_url, retry=retry, timeouts=Timeouts(read=0.1, download=1.5)
        ) as session:
            await session.download(f"{hostile.origin}/img/stall", tmp_path / "x")
    attempts = hostile.paths.count("/img/stall")
    assert 2 <= attempts < 50
    assert list(tmp_path.iterdir()) == []


async def test_the_download_deadline_counts_retry_waits_on_the_session_clock(
    hostile: HostileServer, clock: FakeClock
) -> None:
    """Storage answering 503 for ever is retried every 10 s until the 120 s bound, exactly."""
    retry = RetryPolicy(attempts=1000, base=10.0, cap=10.0, jitter=False)
    async with Session("k", hostile.base_url, retry=retry, clock=clock) as session:
        with pytest.raises(DownloadError, match=r"within Timeouts\.download=120\.0s"):
            await session.read(f"{hostile.origin}/img/unavailable")
    assert clock.now() == 120.0
    assert hostile.paths.count("/img/unavailable") == 12  # at 0, 10, ... 110 s


async def test_read_returns_checked_bytes_without_a_file(
    session: Session, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read() gives each image's bytes, type and URL in order; nothing is written, no key sent."""
    monkeypatch.chdir(tmp_path)
    result = await session.generate("gpt-image-2", "a star", n=2)
    images = await session.read(result)
    assert [image.url for image in images] == list(result.urls)
    assert all(image.data.startswith(PNG_SIGNATURE) for image in images)
    assert {(image.content_type, image.extension) for image in images} == {("image/png", ".png")}
    assert images[0].data != images[1].data
    (single,) = await session.read(result.urls[1])
    assert single == images[1]
    assert emulator.counters.storage_requests == 3
    assert emulator.counters.storage_auth_headers == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "text", "options"),
    [
        ("ok", "larger than max_download_bytes=10", {"limits": Limits(max_download_bytes=10)}),
        ("evil", "link-local address '169.254.169.254'", {}),
        ("empty", "empty body", {}),
    ],
)
async def test_read_has_the_protections_of_download(
    hostile: HostileServer, name: str, text: str, options: dict[str, Any]
) -> None:
    """read() caps the size, checks redirects and refuses bodies that are not images."""
    hostile.redirects["evil"] = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(DownloadError, match=re.escape(text)) as caught:
        await _read_from(hostile, name, **options)
    assert "SECRET" not in str(caught.value)


def test_image_bytes_repr_shows_neither_the_bytes_nor_the_query() -> None:
    """A logged ImageBytes is one short line and keeps signed-URL tokens out of logs."""
    image = ImageBytes(PNG_SIGNATURE * 1000, "image/png", "https://cdn.example/a.png?sig=SECRET")
    assert repr(image) == (
        "ImageBytes(data=<8000 bytes>, content_type='image/png', url='https://cdn.example/a.png')"
    )
    assert image.url == "https://cdn.example/a.png?sig=SECRET"


async def test_inline_images_are_saved_and_read_like_stored_ones(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A result with a b64_json item and a URL: both saved as TASKID-INDEX.png, both readable."""
    async with Session("k", hostile.base_url, retry=FAST_RETRY, poll=FAST_POLL) as session:
        result = await session.track("with-b64-ok")
        assert [bool(item.b64_json) for item in result.images] == [True, False]
        assert result.urls == (f"{hostile.origin}/img/ok?sig=SECRET",)
        paths = await session.download(result, tmp_path)
        images = await session.read(result)
    assert [p.name for p in paths] == ["with-b64-ok-0.png", "with-b64-ok-1.png"]
    assert [p.read_bytes() for p in paths] == [image.data for image in images]
    assert all(image.data.startswith(PNG_SIGNATURE) for image in images)
    assert [image.url for image in images] == [None, result.urls[0]]
    assert hostile.paths.count("/img/ok") == 2  # the inline image needed no request


async def test_an_inline_item_that_is_not_an_image_is_a_download_error(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Inline bytes are checked like downloaded ones; the error names the image and task."""
    async with Session("k", hostile.base_url, retry=FAST_RETRY, poll=FAST_POLL) as session:
        result = await session.track("with-b64junk")
        with pytest.raises(DownloadError, match="the inline \\(b64_json\\) image 0 of") as caught:
            await session.download(result, tmp_path)
        with pytest.raises(DownloadError, match="not a PNG, JPEG, WebP or GIF"):
            await session.read(result)
    assert "with-b64junk" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


async def test_batch_saves_inline_images_and_fails_an_empty_download(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A batch task with an inline image gets its file; a 0-byte image is download_failed."""
    items = [
        BatchItem("inline", ImageRequest(model="gpt-image-2", prompt="with-b64-ok")),
        BatchItem("empty", ImageRequest(model="gpt-image-2", prompt="with-empty")),
    ]
    async with (
        Session("k", hostile.base_url, retry=FAST_RETRY, poll=FAST_POLL) as session,
        BatchRunner(session, tmp_path / "j.db", out_dir=tmp_path / "out") as runner,
    ):
        outcomes = {outcome.key: outcome async for outcome in runner.run(items)}
    assert outcomes["inline"].kind == OutcomeKind.COMPLETED
    saved = [Path(name).read_bytes() for name in outcomes["inline"].files]
    assert len(saved) == 2
    assert all(data.startswith(PNG_SIGNATURE) for data in saved)
    assert outcomes["empty"].kind == OutcomeKind.DOWNLOAD_FAILED
    assert "empty body (0 bytes" in (outcomes["empty"].error or "")
    rows = {row.key: row for row in read_rows(tmp_path / "j.db")}
    assert rows["inline"].urls == (f"{hostile.origin}/img/ok?sig=SECRET",)  # inline: no URL
    assert rows["empty"].files == ()
    images = [p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".png"]
    assert sorted(images) == sorted(Path(name).name for name in outcomes["inline"].files)


async def test_a_rerun_saves_inline_images_again_by_asking_the_server(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Inline images are not journaled: a rerun that must save a row's images again polls
    its task for them, and a row with nothing to save stays download_failed, never
    completed without a file."""
    items = [
        BatchItem("inline", ImageRequest(model="gpt-image-2", prompt="with-b64")),
        BatchItem("junk", ImageRequest(model="gpt-image-2", prompt="with-b64junk")),
    ]
    journal, out = tmp_path / "j.db", tmp_path / "out"

    async def run() -> dict[str, Any]:
        async with (
            Session("k", hostile.base_url, retry=FAST_RETRY, poll=FAST_POLL) as session,
            BatchRunner(session, journal, out_dir=out) as runner,
        ):
            return {outcome.key: outcome async for outcome in runner.run(items)}

    first = await run()
    assert first["inline"].kind == OutcomeKind.COMPLETED
    assert first["junk"].kind == OutcomeKind.DOWNLOAD_FAILED
    (saved,) = (Path(name) for name in first["inline"].files)
    saved.unlink()
    again = await run()
    assert again["inline"].kind == OutcomeKind.COMPLETED
    assert [Path(name).read_bytes()[:8] for name in again["inline"].files] == [PNG_SIGNATURE]
    assert again["junk"].kind == OutcomeKind.DOWNLOAD_FAILED
    assert again["junk"].files == ()


async def test_rerun_downloads_again_over_an_empty_file(session: Session, tmp_path: Path) -> None:
    """A 0-byte file an earlier version saved (and journaled) is not taken as the image."""
    journal, out = tmp_path / "j.db", tmp_path / "out"
    items = [BatchItem("r0", ImageRequest(model="gpt-image-2", prompt="a star"))]
    async with BatchRunner(session, journal, out_dir=out) as runner:
        (first,) = [outcome async for outcome in runner.run(items)]
    (saved,) = (Path(name) for name in first.files)
    saved.write_bytes(b"")
    database = SqliteFile(journal)
    database.set("r0", digests=(hashlib.sha256(b"").hexdigest(),))
    database.close()
    async with BatchRunner(session, journal, out_dir=out) as runner:
        (second,) = [outcome async for outcome in runner.run(items)]
    assert second.kind == OutcomeKind.COMPLETED
    assert second.source == Source.JOURNAL
    assert saved.read_bytes().startswith(PNG_SIGNATURE)
    assert second.files == first.files
