"""A batch's gallery: manifest.jsonl and the index.html contact sheet, checked in a browser."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest

from worldrouter_async import ImageRequest, Session
from worldrouter_async.batch import BatchItem, BatchRunner, JournalRow, Outcome, State
from worldrouter_async.batch._gallery import MAX_COMPLETED_CARDS, write_gallery
from worldrouter_async.testing import Emulator

from .conftest import Chromium

pytestmark = pytest.mark.anyio

HOSTILE_PROMPT = "<script>alert(1)</script> & <b>bold</b> \"quoted\" 'single'"
MANIFEST_KEYS = {
    "id",
    "prompt",
    "model",
    "parameters",
    "task_id",
    "status",
    "files",
    "usage",
    "error",
}


def _items() -> list[BatchItem]:
    """The first create is dropped after it lands (ambiguous); one fails; one asks for two."""
    return [
        BatchItem("lost", ImageRequest(model="gpt-image-2", prompt="a lost kite")),
        BatchItem("xss", ImageRequest(model="gpt-image-2", prompt=HOSTILE_PROMPT)),
        BatchItem("bad", ImageRequest(model="gpt-image-2", prompt="[fail:content_policy] a x")),
        BatchItem(
            "pair",
            ImageRequest(model="gpt-image-2", prompt="two foxes", n=2, size="1024x1536"),
        ),
        BatchItem("gem", ImageRequest(model="gemini-2.5-flash-image", prompt="a paper crane")),
    ]


async def _run_job(session: Session, emulator: Emulator, out: Path) -> list[Outcome]:
    emulator.inject("drop_after_create", route="create")
    async with BatchRunner(session, out / "journal.sqlite3", out_dir=out, concurrency=1) as runner:
        return [outcome async for outcome in runner.run(_items())]


def _manifest(out: Path) -> list[dict[str, Any]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


async def test_batch_writes_a_manifest_line_per_request(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Each request is one manifest object: id, prompt, model, parameters, task ID, status,
    files relative to --out (which exist), usage and error."""
    await _run_job(session, emulator, tmp_path)
    entries = {entry["id"]: entry for entry in _manifest(tmp_path)}
    assert list(entries) == ["lost", "xss", "bad", "pair", "gem"]
    assert all(entry.keys() == MANIFEST_KEYS for entry in entries.values())
    assert {key: entry["status"] for key, entry in entries.items()} == {
        "lost": "ambiguous",
        "xss": "completed",
        "bad": "failed",
        "pair": "completed",
        "gem": "completed",
    }
    pair = entries["pair"]
    assert pair["parameters"] == {"n": 2, "size": "1024x1536"}
    assert pair["prompt"] == "two foxes"
    assert pair["model"] == "gpt-image-2"
    assert pair["task_id"] in emulator.tasks
    assert pair["files"] == ["pair-0.png", "pair-1.png"]
    assert all((tmp_path / name).is_file() for name in pair["files"])
    assert pair["usage"] == {"input_tokens": 2, "output_tokens": 200, "total_tokens": 202}
    assert pair["error"] is None
    assert entries["xss"]["prompt"] == HOSTILE_PROMPT
    bad = entries["bad"]
    assert bad["task_id"] in emulator.tasks
    assert bad["files"] == []
    assert "content_policy" in bad["error"]
    assert entries["lost"]["task_id"] is None
    assert "may have reached the server" in entries["lost"]["error"]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'http-equiv="refresh"' not in page  # the run ended: the page stops reloading
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files, all renamed


async def test_gallery_is_refreshed_while_the_run_goes_on(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Before the run ends, the gallery already lists the finished request and the one
    still running, and the page reloads itself."""
    items = [
        BatchItem("done", ImageRequest(model="gpt-image-2", prompt="a quick one")),
        BatchItem("slow", ImageRequest(model="gpt-image-2", prompt="[never] a slow one")),
    ]
    manifest = tmp_path / "manifest.jsonl"

    async def consume(runner: BatchRunner) -> None:
        async for _ in runner.run(items):
            pass

    async with (
        BatchRunner(session, tmp_path / "journal.sqlite3", out_dir=tmp_path) as runner,
        anyio.create_task_group() as group,
    ):
        group.start_soon(consume, runner)
        with anyio.fail_after(30):
            while not (manifest.exists() and '"completed"' in manifest.read_text()):
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()  # the never-ending task would hold the run forever
    statuses = {entry["id"]: entry["status"] for entry in _manifest(tmp_path)}
    assert statuses == {"done": "completed", "slow": "unfinished"}
    assert 'http-equiv="refresh"' in (tmp_path / "index.html").read_text(encoding="utf-8")


class _Dom(HTMLParser):
    """What a test needs from the dumped DOM: cards, their prompt text, images, scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cards: list[dict[str, str | None]] = []
        self.prompts: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.buttons: list[str] = []
        self.tags: Counter[str] = Counter()
        self._text_of: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        found = dict(attrs)
        if tag == "figure":
            self.cards.append(found)
        elif tag == "img":
            self.images.append(found)
        elif tag == "p" and found.get("class") == "prompt":
            self._text_of = "prompt"
            self.prompts.append("")
        elif tag == "button":
            self._text_of = "button"
            self.buttons.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "button"):
            self._text_of = None

    def handle_data(self, data: str) -> None:
        if self._text_of == "prompt":
            self.prompts[-1] += data
        elif self._text_of == "button":
            self.buttons[-1] += data


async def test_gallery_in_a_browser_loads_every_image_and_shows_prompts_as_text(
    session: Session, emulator: Emulator, tmp_path: Path, chromium: Chromium
) -> None:
    """Opened from file:// in headless chromium, every image of the run loads, every prompt
    (one full of HTML) reads as typed, and failures and ambiguous requests have cards."""
    await _run_job(session, emulator, tmp_path)
    url = (tmp_path / "index.html").as_uri()
    dom = _Dom(await anyio.to_thread.run_sync(chromium.dump_dom, url))
    files = [name for entry in _manifest(tmp_path) for name in entry["files"]]
    assert len(dom.images) == len(files) == 4
    assert [image["src"] for image in dom.images] == files
    assert [image.get("data-loaded") for image in dom.images] == ["yes"] * 4  # naturalWidth > 0
    assert dom.prompts == [item.request.prompt for item in _items()]
    assert dom.tags["script"] == 1  # only the page's own
    assert dom.tags["b"] == 0
    assert [card["data-status"] for card in dom.cards] == [
        "ambiguous",
        "completed",
        "failed",
        "completed",
        "completed",
    ]
    assert dom.buttons == ["all5", "completed3", "failed1", "ambiguous1"]
    assert not any("hidden" in card for card in dom.cards)
    failed_only = _Dom(await anyio.to_thread.run_sync(chromium.dump_dom, f"{url}#failed"))
    shown = [card["data-status"] for card in failed_only.cards if "hidden" not in card]
    assert shown == ["failed"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worldrouter_async", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


async def test_gallery_command_rebuilds_both_files_from_the_journal(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """`worldrouter-async gallery OUT` writes the same manifest again from OUT's journal."""
    await _run_job(session, emulator, tmp_path)
    written = (tmp_path / "manifest.jsonl").read_text(encoding="utf-8")
    (tmp_path / "manifest.jsonl").unlink()
    (tmp_path / "index.html").unlink()
    done = await anyio.to_thread.run_sync(_cli, "gallery", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "5 requests" in done.stdout
    assert (tmp_path / "manifest.jsonl").read_text(encoding="utf-8") == written
    assert HOSTILE_PROMPT not in (tmp_path / "index.html").read_text(encoding="utf-8")


async def test_gallery_command_takes_the_journal_from_elsewhere(tmp_path: Path) -> None:
    """The demo keeps its journal above its images: without --journal the command says so
    (exit 2, no traceback); with it, the gallery is rebuilt beside the images."""
    demo = await anyio.to_thread.run_sync(_cli, "demo", "--count", "3", "--out", str(tmp_path))
    assert demo.returncode == 0, demo.stderr
    images = tmp_path / "images"
    assert len(_manifest(images)) == 3  # the demo's run wrote a gallery already
    (images / "index.html").unlink()
    missing = await anyio.to_thread.run_sync(_cli, "gallery", str(images))
    assert missing.returncode == 2
    assert "--journal" in missing.stderr
    assert "Traceback" not in missing.stderr
    journal = str(tmp_path / "journal.sqlite3")
    rebuilt = await anyio.to_thread.run_sync(_cli, "gallery", str(images), "--journal", journal)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (images / "index.html").read_text(encoding="utf-8").count("<figure") == 3
    refused = await anyio.to_thread.run_sync(
        _cli, "gallery", str(images), "--journal", str(tmp_path / "prompts.jsonl")
    )
    assert refused.returncode == 2
    assert "not a batch journal" in refused.stderr


def test_gallery_streams_rows_and_caps_the_completed_cards(tmp_path: Path) -> None:
    """20,000 rows pass through in flat memory; the page shows 10,000 completed cards, every
    failed one after them, and says the manifest lists the rest."""
    request = ImageRequest(model="gpt-image-2", prompt="one of many")

    def rows() -> Iterator[JournalRow]:
        for i in range(20_000):
            state = State.FAILED if i % 1000 == 999 else State.COMPLETED
            files = (f"r{i}-0.png",) if state == State.COMPLETED else ()
            yield JournalRow(f"r{i}", i, request, f"key-{i}", state, task_id=f"t{i}", files=files)

    tracemalloc.start()
    try:
        gallery = write_gallery(rows(), tmp_path, title="many")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000  # 20,000 rows held at once would take tens of MB
    assert gallery.requests == 20_000
    assert len(_manifest(tmp_path)) == 20_000
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert page.count('data-status="completed"') == MAX_COMPLETED_CARDS
    assert page.count('data-status="failed"') == 20
    assert f"{19_980 - MAX_COMPLETED_CARDS} more completed requests" in page
