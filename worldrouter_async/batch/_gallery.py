"""A bulk job's gallery: ``manifest.jsonl`` and an ``index.html`` contact sheet, from the journal.

The journal is the only record of which prompt made which file; the gallery puts it next
to the images in two forms: a manifest, one JSON object per request, for scripts, and a
self-contained contact sheet for people (no external CSS, scripts or fonts, so it opens
from ``file://`` offline). Both are streamed from the journal row by row and moved into
place whole (temporary file, then rename), so a reader never sees half a file and memory
stays flat however long the job. `GalleryRefresher` rebuilds them while a run goes on.
"""

from __future__ import annotations

import html
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import quote

import anyio
import anyio.to_thread
from attrs import define, field

from ..models import converter
from ._errors import JournalError
from ._outcomes import OutcomeKind, kind_of
from .journal import JournalRow, iter_rows

logger: Final = logging.getLogger("worldrouter_async")

#: The gallery's manifest in a batch's output directory: one JSON object per request.
MANIFEST_NAME: Final = "manifest.jsonl"
#: The gallery's contact sheet in a batch's output directory.
INDEX_NAME: Final = "index.html"
#: Fewest seconds between two rebuilds during a run.
REFRESH_INTERVAL: Final = 3.0
#: A rebuild waits at least this many times as long as the last one took, so a huge
#: journal's gallery costs the run a small share of its time.
REFRESH_BACKOFF: Final = 5.0
#: Completed requests shown as cards; every other request always gets a card, and the
#: manifest lists them all.
MAX_COMPLETED_CARDS: Final = 10_000
#: Cards whose images load at once; later ones load as they scroll into view.
EAGER_CARDS: Final = 300
#: While a run goes on, an open contact sheet reloads itself after this many seconds.
LIVE_RELOAD_SECONDS: Final = 5
_NOTES: Final[dict[str, str]] = {
    OutcomeKind.FAILED: "no image: the task failed, or its request was refused",
    OutcomeKind.INVALID: "not run: the input line is invalid",
    OutcomeKind.AMBIGUOUS: "may have been created (the create got no answer); not resent",
    OutcomeKind.PENDING: "not created yet; a rerun sends it",
    OutcomeKind.UNFINISHED: "still running when the run stopped; a rerun tracks it",
    OutcomeKind.DOWNLOAD_FAILED: "generated, but its files are missing; a rerun fetches them",
    OutcomeKind.EXPIRED: "the server no longer knows this task",
}


def _path(value: str | os.PathLike[str]) -> Path:
    return Path(value)


@define(frozen=True)
class Gallery:
    """The files a gallery build wrote, and how many requests they list."""

    #: The manifest (`MANIFEST_NAME` in the output directory).
    manifest: Path = field(converter=_path)
    #: The contact sheet (`INDEX_NAME` in the output directory).
    index: Path = field(converter=_path)
    requests: int


def manifest_entry(row: JournalRow) -> dict[str, Any]:
    """The manifest object of one request (the schema is documented in the bulk-jobs guide)."""
    parameters = row.request.to_payload()
    del parameters["model"], parameters["prompt"]
    return {
        "id": row.key,
        "prompt": row.request.prompt,
        "model": row.request.model,
        "parameters": parameters,
        "task_id": row.task_id,
        "status": str(kind_of(row)),
        "files": list(row.files),
        "usage": converter.unstructure(row.usage) if row.usage is not None else None,
        "error": row.error,
    }


def build_gallery(
    journal: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, live: bool = False
) -> Gallery:
    """Write ``manifest.jsonl`` and ``index.html`` into `out_dir` from the journal's rows.

    Rows are read one at a time (`iter_rows`), so a journal of any length fits. `live`
    makes the page reload itself every few seconds, for a run that is still going.
    Raises `JournalError` (or `OSError`) when the journal cannot be read or the files
    cannot be written; the previous gallery then stays as it was.

    Example:
        >>> gallery = build_gallery("job.sqlite3", "images")  # doctest: +SKIP
        >>> print(gallery.index, gallery.requests)  # doctest: +SKIP
    """
    out = Path(out_dir)
    title = "/".join(out.resolve().parts[-2:])  # "worldrouter-demo/images" says more than one
    return write_gallery(iter_rows(journal), out, title=title, live=live)


def write_gallery(
    rows: Iterable[JournalRow], out_dir: Path, *, title: str, live: bool = False
) -> Gallery:
    """Write the manifest and the contact sheet of `rows` into `out_dir`, both atomically."""
    manifest, index = out_dir / MANIFEST_NAME, out_dir / INDEX_NAME
    out_dir.mkdir(parents=True, exist_ok=True)  # a run whose every request failed has none
    with _replacing(manifest) as manifest_file, _replacing(index) as index_file:
        sheet = _Sheet(index_file, title=title, live=live)
        count = 0
        for row in rows:
            manifest_file.write(json.dumps(manifest_entry(row), ensure_ascii=False) + "\n")
            sheet.add(row)
            count += 1
        sheet.close()
    return Gallery(manifest=manifest, index=index, requests=count)


@contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """A text file that replaces `path` whole when the block ends without an error."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # A prompt with a lone surrogate (legal in JSON input) cannot be UTF-8: "?" stands in.
        with temp.open("w", encoding="utf-8", errors="replace", newline="\n") as file:
            yield file
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _text(value: object) -> str:
    """`value` as HTML text or attribute content: every user string passes through here."""
    return html.escape(str(value), quote=True)


def _href(name: str) -> str:
    """The link to an image from the gallery (journal names are relative to `out_dir`)."""
    path = Path(name)
    return path.as_uri() if path.is_absolute() else quote(path.as_posix())


class _Sheet:
    """The contact sheet, written card by card as rows arrive."""

    def __init__(self, file: IO[str], *, title: str, live: bool) -> None:
        self._file = file
        self._cards = self._completed = self._hidden = 0
        built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        reload = f'<meta http-equiv="refresh" content="{LIVE_RELOAD_SECONDS}">' if live else ""
        state = "running: this page reloads itself" if live else "finished"
        file.write(
            _HEAD.format(title=_text(title), reload=reload, style=_STYLE)
            + f'<header><h1>{_text(title)}</h1><p class="built">gallery built {built} '
            f"(run {state})</p>"
            '<nav id="filters" aria-label="filter by status"></nav></header>\n<main id="sheet">\n'
        )

    def add(self, row: JournalRow) -> None:
        kind = kind_of(row)
        if kind == OutcomeKind.COMPLETED:
            self._completed += 1
            if self._completed > MAX_COMPLETED_CARDS:
                self._hidden += 1
                return
        self._cards += 1
        self._file.write(self._card(row, kind))

    def _card(self, row: JournalRow, kind: OutcomeKind) -> str:
        prompt = _text(row.request.prompt)
        loading = "eager" if self._cards <= EAGER_CARDS else "lazy"
        images = "".join(
            f'<a href="{_text(_href(name))}"><img src="{_text(_href(name))}" alt="{prompt}"'
            f' loading="{loading}"></a>'
            for name in row.files
        )
        note = _NOTES.get(kind, "")
        if not images:
            images = f'<div class="empty">{_text(note or kind.replace("_", " "))}</div>'
        error = f'<p class="error">{_text(row.error)}</p>' if row.error else ""
        task = f'<p class="task" title="task ID">{_text(row.task_id)}</p>' if row.task_id else ""
        return (
            f'<figure class="card" data-status="{_text(kind)}"><div class="images">{images}</div>'
            f'<figcaption><p class="prompt">{prompt}</p><p class="meta">'
            f'<span class="badge">{_text(kind.replace("_", " "))}</span> '
            f'<span class="id">{_text(row.key)}</span> · {_text(row.request.model)}</p>'
            f"{task}{error}</figcaption></figure>\n"
        )

    def close(self) -> None:
        more = ""
        if self._hidden:
            more = (
                f'<p class="more">{self._hidden} more completed requests are not shown here; '
                f"{MANIFEST_NAME} lists every request.</p>"
            )
        self._file.write(f"</main>\n{more}<script>{_SCRIPT}</script>\n</body>\n</html>\n")


class GalleryRefresher:
    """Keeps a running job's gallery fresh: rebuilt after outcomes, at most every few
    seconds (longer when a build is slow), and once more when the run ends.

    `changed` only signals; the rebuild runs in `run`, a task the runner owns. A failed
    build is logged and retried later: the gallery never stops a run.
    """

    def __init__(self, journal: Path, out_dir: Path) -> None:
        self._build: Callable[[bool], Gallery] = lambda live: build_gallery(
            journal, out_dir, live=live
        )
        self._changed = anyio.Event()
        self._scope = anyio.CancelScope()
        self._building = anyio.Lock()  # a build abandoned by `stop` ends before `finish` runs

    def changed(self) -> None:
        """Note that the journal holds something new."""
        self._changed.set()

    async def run(self) -> None:
        """Rebuild after each change, pausing between builds, until `stop`."""
        with self._scope:
            while True:
                await self._changed.wait()
                self._changed = anyio.Event()
                took = await self._rebuild(live=True)
                await anyio.sleep(max(REFRESH_INTERVAL, REFRESH_BACKOFF * took))

    def stop(self) -> None:
        """End `run` (a rebuild under way is abandoned; its temporary file is removed)."""
        self._scope.cancel()

    async def finish(self) -> None:
        """The last build, once the run has ended: the page stops reloading itself."""
        await self._rebuild(live=False)

    async def _rebuild(self, *, live: bool) -> float:
        async with self._building:
            started = time.monotonic()
            try:
                await anyio.to_thread.run_sync(self._build, live)
            except (JournalError, sqlite3.Error, OSError) as exc:
                logger.warning("could not write the gallery (%s); the run goes on", exc)
            return time.monotonic() - started


_HEAD: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{reload}<title>{title} · worldrouter-async gallery</title>
<style>{style}</style>
</head>
<body>
"""

_STYLE: Final = """
:root{--bg:#f4f4f6;--card:#fff;--ink:#1d1d22;--muted:#6b6b76;--line:#e2e2e8;
--completed:#1f8a4c;--failed:#c0362c;--ambiguous:#b86e00;--other:#5a5f73}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{position:sticky;top:0;z-index:1;background:rgba(244,244,246,.95);
border-bottom:1px solid var(--line);padding:14px 24px 12px}
h1{margin:0;font-size:19px;font-weight:650}
.built{margin:2px 0 10px;color:var(--muted);font-size:12px}
nav{display:flex;flex-wrap:wrap;gap:6px}
nav button{font:inherit;font-size:13px;border:1px solid var(--line);background:var(--card);
color:var(--ink);border-radius:999px;padding:3px 12px;cursor:pointer}
nav button span{color:var(--muted);margin-left:4px}
nav button[aria-pressed=true]{background:var(--ink);color:#fff;border-color:var(--ink)}
nav button[aria-pressed=true] span{color:#c9c9d2}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:16px;
padding:20px 24px 32px}
.card{margin:0;background:var(--card);border:1px solid var(--line);border-radius:10px;
overflow:hidden;display:flex;flex-direction:column;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.card[hidden]{display:none}
.images{display:grid;grid-template-columns:repeat(auto-fit,minmax(80px,1fr));
grid-template-rows:minmax(0,1fr);gap:2px;background:#e9e9ee;aspect-ratio:1;overflow:hidden}
.images a{display:block;min-width:0;min-height:0}
.images img{width:100%;height:100%;object-fit:contain;display:block}
.images img[data-loaded=error]{visibility:hidden}
.empty{display:flex;align-items:center;justify-content:center;text-align:center;padding:16px;
color:var(--muted);font-size:12px;background:repeating-linear-gradient(135deg,#f1f1f4 0 10px,
#e8e8ed 10px 20px)}
figcaption{padding:9px 11px 11px;display:flex;flex-direction:column;gap:5px}
.prompt{margin:0;font-weight:550;overflow-wrap:anywhere;display:-webkit-box;
-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden}
.meta{margin:0;color:var(--muted);font-size:12px;overflow-wrap:anywhere}
.id,.task{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:11px}
.task{margin:0;color:var(--muted);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.badge{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-size:11px;
font-weight:600;background:var(--other)}
[data-status=completed] .badge{background:var(--completed)}
[data-status=failed] .badge,[data-status=expired] .badge,[data-status=invalid] .badge{
background:var(--failed)}
[data-status=ambiguous] .badge,[data-status=download_failed] .badge{background:var(--ambiguous)}
[data-status=failed],[data-status=expired]{border-color:#efc4c0}
[data-status=ambiguous]{border-color:#ecd3a8}
.error{margin:0;font-size:12px;color:var(--failed);overflow-wrap:anywhere;max-height:6em;
overflow:auto}
.more{padding:0 24px 32px;color:var(--muted)}
"""

# Builds the filter buttons from the cards' statuses (the choice kept in the URL's #, so a
# live reload keeps it) and records on each image whether it loaded (data-loaded), which
# hides broken ones and lets a test read the outcome from the DOM.
_SCRIPT: Final = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll("#sheet .card"));
  var nav = document.getElementById("filters");
  var order = ["completed", "failed", "ambiguous", "pending", "unfinished", "expired",
               "download_failed", "invalid"];
  var counts = {};
  cards.forEach(function (card) {
    var s = card.getAttribute("data-status");
    counts[s] = (counts[s] || 0) + 1;
    if (order.indexOf(s) < 0) { order.push(s); }
  });
  var buttons = [];
  function show(status) {
    cards.forEach(function (card) {
      card.hidden = status !== "all" && card.getAttribute("data-status") !== status;
    });
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-status") === status));
    });
  }
  function button(status, count) {
    var b = document.createElement("button");
    b.type = "button";
    b.setAttribute("data-status", status);
    b.textContent = status.replace("_", " ");
    var n = document.createElement("span");
    n.textContent = String(count);
    b.appendChild(n);
    b.addEventListener("click", function () {
      location.hash = status === "all" ? "" : status;
      show(status);
    });
    nav.appendChild(b);
    buttons.push(b);
  }
  button("all", cards.length);
  order.forEach(function (s) { if (counts[s]) { button(s, counts[s]); } });
  var wanted = decodeURIComponent(location.hash.slice(1));
  show(counts[wanted] ? wanted : "all");
  document.querySelectorAll("#sheet img").forEach(function (img) {
    function mark() {
      img.setAttribute("data-loaded", img.naturalWidth > 0 ? "yes" : "error");
    }
    if (img.complete) { mark(); }
    else {
      img.addEventListener("load", mark);
      img.addEventListener("error", mark);
    }
  });
})();
"""
