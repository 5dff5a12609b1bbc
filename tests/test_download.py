"""Downloads: real PNGs from the storage origin, atomic, bounded, never authenticated."""

from __future__ import annotations

import os
import re
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from worldrouter_async import DownloadError, Limits, Session
from worldrouter_async._download import check_redirect, safe_name
from worldrouter_async._retries import is_transient
from worldrouter_async.testing import FAST_RETRY, Emulator
from worldrouter_async.testing._png import PNG_SIGNATURE

from .conftest import SessionFactory
from .hostile import HostileServer

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
    with pytest.raises(DownloadError, match="'text/html', not an image"):
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
