"""Downloads: real PNGs from the storage origin, atomic, bounded, never authenticated."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldrouter_async import DownloadError, Limits, Session
from worldrouter_async._download import safe_name
from worldrouter_async.testing import Emulator
from worldrouter_async.testing._png import PNG_SIGNATURE

from .conftest import SessionFactory

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
