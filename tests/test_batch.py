"""The resumable runner through its Python API: journal first, resume without double creates."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from worldrouter_async import IgnoredParameterWarning, ImageRequest, RetryPolicy, Session, Usage
from worldrouter_async.batch import (
    BatchItem,
    BatchRunner,
    InvalidLine,
    JournalError,
    JournalInUseError,
    JournalLostError,
    JournalRow,
    Outcome,
    OutcomeKind,
    OutputClaimedError,
    Source,
    State,
    file_stem,
    iter_invalid_lines,
    iter_jsonl,
    kind_of,
    read_jsonl,
    read_rows,
)
from worldrouter_async.batch._creates import CONNECTION_FAILURES_TO_STOP
from worldrouter_async.batch.journal import SqliteFile
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator

from .conftest import SessionFactory, batch_items, fill_disk

pytestmark = pytest.mark.anyio


DEFAULTS = {"model": "gpt-image-2"}


async def _run(
    session: Session, journal: Path, items: list[BatchItem], out: Path | None = None
) -> tuple[list[Outcome], BatchRunner]:
    async with BatchRunner(session, journal, out_dir=out, concurrency=4) as runner:
        outcomes = [outcome async for outcome in runner.run(items)]
    return outcomes, runner


async def test_run_completes_downloads_and_journals(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Every request ends completed, with its files on disk and in the journal."""
    outcomes, runner = await _run(session, tmp_path / "j.db", batch_items(12), tmp_path / "out")
    assert sorted(o.key for o in outcomes) == sorted(f"r{i}" for i in range(12))
    assert all(o.kind == OutcomeKind.COMPLETED and o.source == Source.NEW for o in outcomes)
    assert all(Path(f).exists() for o in outcomes for f in o.files)
    rows = read_rows(tmp_path / "j.db")
    assert {r.state for r in rows} == {State.COMPLETED}
    assert all(r.sends == 1 and r.files for r in rows)
    assert runner.summary.counts == {"completed": 12}
    assert runner.summary.usage.output_tokens == 1200
    assert emulator.counters.creates == 12


async def test_rerun_skips_completed_requests(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A second run with the same journal sends nothing for finished requests."""
    await _run(session, tmp_path / "j.db", batch_items(5), tmp_path / "out")
    outcomes, runner = await _run(session, tmp_path / "j.db", batch_items(5), tmp_path / "out")
    assert {o.source for o in outcomes} == {Source.JOURNAL}
    assert runner.summary.ok
    assert emulator.counters.creates == 5
    assert emulator.counters.storage_requests == 5


async def test_resume_redownloads_only_missing_files(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Deleting one image and rerunning fetches that image alone."""
    outcomes, _ = await _run(session, tmp_path / "j.db", batch_items(4), tmp_path / "out")
    Path(outcomes[0].files[0]).unlink()
    again, _ = await _run(session, tmp_path / "j.db", batch_items(4), tmp_path / "out")
    assert all(Path(f).exists() for o in again for f in o.files)
    assert emulator.counters.storage_requests == 5
    assert emulator.counters.creates == 4


async def test_created_tasks_are_tracked_not_recreated(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A journal row with a task ID is tracked by ID on resume."""
    items = batch_items(3)
    task = await session.tasks.create("gpt-image-2", items[0].request.prompt)
    _journal_with(tmp_path / "j.db", _row(items[0], State.CREATED), task_id=task.id)
    outcomes, _ = await _run(session, tmp_path / "j.db", items)
    by_key = {o.key: o for o in outcomes}
    assert by_key["r0"].source == Source.TRACKED
    assert by_key["r0"].task_id == task.id
    assert emulator.counters.creates == 3  # the manual one plus r1 and r2


async def test_in_flight_create_is_not_resent_by_default(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A row left 'submitting' is reported ambiguous, not resent, unless the session allows it."""
    items = batch_items(1)
    row = _row(items[0], State.SUBMITTING)
    await session.tasks.create(
        "gpt-image-2", items[0].request.prompt, idempotency_key=row.idempotency_key
    )
    _journal_with(tmp_path / "j.db", row)
    (outcome,), _ = await _run(session, tmp_path / "j.db", items)
    assert (outcome.kind, outcome.source) == (OutcomeKind.AMBIGUOUS, Source.JOURNAL)
    assert "retry_ambiguous_creates=True" in (outcome.error or "")
    assert emulator.counters.create_requests == 1  # only the one made above
    assert read_rows(tmp_path / "j.db")[0].state == State.SUBMITTING


async def test_in_flight_create_is_resent_with_the_same_key_when_allowed(
    make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """With retry_ambiguous_creates, a 'submitting' row is resent with its key and deduplicated."""
    items = batch_items(1)
    row = _row(items[0], State.SUBMITTING)
    async with make_session(retry_ambiguous_creates=True) as session:
        landed = await session.tasks.create(
            "gpt-image-2", items[0].request.prompt, idempotency_key=row.idempotency_key
        )
        _journal_with(tmp_path / "j.db", row)
        (outcome,), _ = await _run(session, tmp_path / "j.db", items)
    assert outcome.source == Source.RESUBMITTED
    assert outcome.task_id == landed.id
    assert emulator.counters.creates == 1
    assert emulator.counters.idempotent_replays == 1


async def test_expired_task_is_marked_not_resubmitted(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A tracked task that answers 404 is 'expired' in the journal; nothing is re-created."""
    items = batch_items(1)
    _journal_with(tmp_path / "j.db", _row(items[0], State.CREATED), task_id="imgtask_gone")
    (outcome,), runner = await _run(session, tmp_path / "j.db", items)
    assert outcome.kind == OutcomeKind.EXPIRED
    assert read_rows(tmp_path / "j.db")[0].state == State.EXPIRED
    assert emulator.counters.create_requests == 0
    assert not runner.summary.ok


async def test_failed_and_ambiguous_outcomes(
    session: Session, make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """A failed task is final; an ambiguous create stays 'submitting'; a retrying rerun ends it."""
    items = [*batch_items(1, marker="[fail] "), *batch_items(2)[1:]]
    emulator.inject("drop_after_create", route="create")
    outcomes, _ = await _run(session, tmp_path / "j.db", items)
    kinds = sorted(o.kind for o in outcomes)
    assert kinds == [OutcomeKind.AMBIGUOUS, OutcomeKind.FAILED] or kinds == [
        OutcomeKind.AMBIGUOUS,
        OutcomeKind.COMPLETED,
    ]
    states = {r.key: r.state for r in read_rows(tmp_path / "j.db")}
    assert State.SUBMITTING in states.values()
    async with make_session(retry_ambiguous_creates=True) as retrying:
        again, _ = await _run(retrying, tmp_path / "j.db", items)
    assert {o.key: o.kind for o in again} == {"r0": "failed", "r1": "completed"}
    assert emulator.counters.creates == 2


async def test_edited_input_is_reported_not_run(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A key whose request changed since it was journaled is refused as invalid."""
    await _run(session, tmp_path / "j.db", batch_items(1))
    edited = [BatchItem("r0", ImageRequest(model="gpt-image-2", prompt="something else"))]
    (outcome,), _ = await _run(session, tmp_path / "j.db", edited)
    assert outcome.kind == OutcomeKind.INVALID
    assert "differs from the one journaled" in (outcome.error or "")
    assert emulator.counters.creates == 1


def test_jsonl_reports_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    """Bad lines carry their numbers; good lines (with defaults applied) are kept."""
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "one", "id": "a"}),
                "{not json",
                json.dumps({"prompt": "two", "size": "huge"}),
                "",
                json.dumps({"prompt": "three", "model": "gemini-2.5-flash-image"}),
                json.dumps({"prompt": "dup", "id": "a"}),
                json.dumps(["a list"]),
            ]
        )
    )
    items, errors = read_jsonl(path, defaults={"model": "gpt-image-2"})
    assert [(i.key, i.request.model) for i in items] == [
        ("a", "gpt-image-2"),
        ("line-5", "gemini-2.5-flash-image"),
    ]
    assert [e.line for e in errors] == [2, 3, 6, 7]
    assert "size must be 'WIDTHxHEIGHT'" in errors[1].message
    assert "repeats line 1" in errors[2].message


def _fast_session(api_key: str, base_url: str) -> Session:
    return Session(api_key, base_url, poll=FAST_POLL, retry=FAST_RETRY)


def _journal_with(path: Path, row: JournalRow, **fields: str) -> None:
    journal = SqliteFile(path)
    journal.add([row])
    if fields:
        journal.set(row.key, **fields)
    journal.close()


def _row(item: BatchItem, state: State) -> JournalRow:
    return JournalRow(
        key=item.key,
        position=0,
        request=item.request,
        idempotency_key=f"key-{item.key}",
        state=state,
    )


def test_jsonl_invalid_utf8_is_one_bad_line(tmp_path: Path) -> None:
    """A line that is not UTF-8 is reported by number; the lines around it still run."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "one"}\n{"prompt": "caf\xe9"}\n{"prompt": "three"}\n')
    items, errors = read_jsonl(path, defaults={"model": "gpt-image-2"})
    assert [i.request.prompt for i in items] == ["one", "three"]
    assert [(e.line, "not valid UTF-8" in e.message) for e in errors] == [(2, True)]


@pytest.mark.parametrize(
    "keys",
    [
        ["a/b", "a_b", "a b", "A_B", "a_b--0123456789"],
        ["名前", "日本", "ß", "ss", "SS"],
        ["con", "con.png", "x.", "x", "..", ".hidden", "", "-"],
        ["é", "e\u0301", "x" * 200, "x" * 201],
    ],
)
def test_file_stems_are_distinct_and_safe(keys: list[str]) -> None:
    """Distinct keys give distinct stems, even ignoring case; stems are plain file names."""
    stems = [file_stem(key) for key in keys]
    assert len({stem.casefold() for stem in stems}) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem) for stem in stems)
    assert all(len(stem) <= 80 for stem in stems)


def test_readable_keys_keep_their_names() -> None:
    """Plain lower-case keys are used as is; others stay recognisable before their hash."""
    assert file_stem("kite-7") == "kite-7"
    assert file_stem("Photo 1").startswith("Photo_1--")


async def test_colliding_ids_keep_every_image(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Ids that used to share a file name each keep their own image."""
    keys = ["a/b", "a_b", "a b", "名前", "日本"]
    items = [
        BatchItem(key, ImageRequest(model="gpt-image-2", prompt=f"prompt {key}")) for key in keys
    ]
    outcomes, runner = await _run(session, tmp_path / "j.db", items, tmp_path / "out")
    assert runner.summary.counts == {"completed": 5}
    files = {f for o in outcomes for f in o.files}
    assert len(files) == 5
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


async def test_resume_replaces_a_file_that_is_not_its_rows(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A file overwritten by other bytes is noticed by its digest and downloaded again."""
    outcomes, _ = await _run(session, tmp_path / "j.db", batch_items(2), tmp_path / "out")
    by_key = {o.key: Path(o.files[0]) for o in outcomes}
    by_key["r0"].write_bytes(by_key["r1"].read_bytes())
    again, _ = await _run(session, tmp_path / "j.db", batch_items(2), tmp_path / "out")
    assert emulator.counters.storage_requests == 3
    assert by_key["r0"].read_bytes() != by_key["r1"].read_bytes()
    assert {o.key: o.kind for o in again} == {"r0": "completed", "r1": "completed"}


async def test_resume_from_another_directory_finds_the_files(
    session: Session, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are journaled relative to the output directory, not the working directory."""
    (tmp_path / "job").mkdir()
    monkeypatch.chdir(tmp_path / "job")
    await _run(session, Path("out/j.db"), batch_items(3), Path("out"))
    assert all(not Path(f).is_absolute() for r in read_rows("out/j.db") for f in r.files)
    monkeypatch.chdir(tmp_path)
    again, _ = await _run(session, Path("job/out/j.db"), batch_items(3), Path("job/out"))
    assert {o.source for o in again} == {Source.JOURNAL}
    assert emulator.counters.storage_requests == 3


async def test_second_runner_on_a_journal_is_refused(session: Session, tmp_path: Path) -> None:
    """Two runners cannot hold one journal: the second fails at once, naming the pid."""
    async with BatchRunner(session, tmp_path / "j.db"):
        with pytest.raises(JournalInUseError, match=f"in use by pid {os.getpid()}"):
            async with BatchRunner(session, tmp_path / "j.db"):
                pass


async def test_images_without_their_journal_are_not_recreated(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A lost journal beside existing images refuses to start, unless asked to start over."""
    await _run(session, tmp_path / "out" / "j.db", batch_items(2), tmp_path / "out")
    (tmp_path / "out" / "j.db").unlink()
    with pytest.raises(JournalError, match="already holds images"):
        await _run(session, tmp_path / "out" / "j.db", batch_items(2), tmp_path / "out")
    assert emulator.counters.creates == 2
    async with BatchRunner(
        session, tmp_path / "out" / "j.db", out_dir=tmp_path / "out", new_journal=True
    ) as runner:
        assert len([o async for o in runner.run(batch_items(2))]) == 2
    assert emulator.counters.creates == 4


async def test_journal_deleted_mid_run_stops_the_run(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Deleting the journal during a run stops it with JournalError before more creates."""

    async def run_and_delete_after_the_first_outcome() -> None:
        runner = BatchRunner(session, tmp_path / "j.db", concurrency=1, max_pending=1)
        async with runner:
            async for _ in runner.run(batch_items(20)):
                (tmp_path / "j.db").unlink(missing_ok=True)

    with pytest.raises(JournalError, match="was deleted"):
        await run_and_delete_after_the_first_outcome()
    assert emulator.counters.creates <= 3  # the one reported, and at most two in flight


async def test_leftover_part_files_are_removed(session: Session, tmp_path: Path) -> None:
    """Half-written downloads of a killed run are cleaned when the next run starts."""
    (tmp_path / "out").mkdir()
    part = tmp_path / "out" / ".r0-0.png.x1y2.part"
    part.write_bytes(b"half")
    await _run(session, tmp_path / "j.db", batch_items(1), tmp_path / "out")
    assert not part.exists()


async def test_run_twice_is_a_clear_error(session: Session, tmp_path: Path) -> None:
    """A runner runs one job; a second run() says how to run again."""
    async with BatchRunner(session, tmp_path / "j.db") as runner:
        assert len([o async for o in runner.run(batch_items(1))]) == 1
        with pytest.raises(RuntimeError, match="already run"):
            [o async for o in runner.run(batch_items(1))]


async def test_async_iterable_input_and_repeated_keys(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """An async iterable feeds the run; a key repeated within the run is reported invalid."""

    async def produce() -> AsyncIterator[BatchItem]:
        for item in [*batch_items(300), *batch_items(1)]:
            yield item

    async with BatchRunner(session, tmp_path / "j.db", concurrency=8) as runner:
        outcomes = [o async for o in runner.run(produce())]
    assert runner.summary.counts == {"completed": 300, "invalid": 1}
    assert "repeats an earlier request" in next(o.error or "" for o in outcomes if not o.ok)
    assert emulator.counters.creates == 300


async def test_413_and_400_are_final(session: Session, emulator: Emulator, tmp_path: Path) -> None:
    """A create refused with 413 or 400 is failed for good; a rerun sends nothing for it."""
    emulator.inject("413", route="create")
    items = [*batch_items(1), BatchItem("bad", ImageRequest(model="no-such-model", prompt="x"))]
    outcomes, _ = await _run(session, tmp_path / "j.db", items)
    assert {o.key: o.kind for o in outcomes} == {"r0": "failed", "bad": "failed"}
    requests_before = emulator.counters.create_requests
    again, _ = await _run(session, tmp_path / "j.db", items)
    assert {o.source for o in again} == {Source.JOURNAL}
    assert emulator.counters.create_requests == requests_before


async def test_a_refused_key_stops_creates_and_status_agrees(
    emulator: Emulator, tmp_path: Path
) -> None:
    """401 stops new creates at once; the summary counts what the journal says."""
    wrong = _fast_session("wrong-key", emulator.base_url)
    async with wrong, BatchRunner(wrong, tmp_path / "j.db", concurrency=2) as runner:
        outcomes = [o async for o in runner.run(batch_items(40))]
    assert "refused the API key: " in (runner.stop_reason or "")
    assert (runner.stop_reason or "").count("HTTP 401") == 1
    assert emulator.counters.create_requests <= 2 + 1
    assert runner.summary.counts == {"pending": 40}
    assert {o.kind for o in outcomes} == {OutcomeKind.PENDING}
    assert Counter(kind_of(r) for r in read_rows(tmp_path / "j.db")) == runner.summary.counts


async def test_connection_failures_stop_creates(tmp_path: Path, free_tcp_port: int) -> None:
    """A run of creates that cannot connect stops the rest instead of trying every line."""
    offline = _fast_session("k", f"http://127.0.0.1:{free_tcp_port}/v1")
    async with offline, BatchRunner(offline, tmp_path / "j.db", concurrency=2) as runner:
        outcomes = [o async for o in runner.run(batch_items(50))]
    assert "could not reach the server" in (runner.stop_reason or "")
    assert {o.kind for o in outcomes} == {OutcomeKind.PENDING}
    sent = [r for r in read_rows(tmp_path / "j.db") if r.sends]
    assert len(sent) <= CONNECTION_FAILURES_TO_STOP + 2


async def test_full_disk_fails_downloads_per_row_and_stops_creates(
    session: Session, emulator: Emulator, tmp_path: Path, small_tmpfs: Path
) -> None:
    """ENOSPC ends rows as download_failed and stops new creates; a rerun only downloads."""
    filler = fill_disk(small_tmpfs)
    out = small_tmpfs / "out"
    out.mkdir(exist_ok=True)
    runner = BatchRunner(session, tmp_path / "j.db", out_dir=out, concurrency=1, max_pending=1)
    async with runner:
        outcomes = [o async for o in runner.run(batch_items(6))]
    assert "is full" in (runner.stop_reason or "")
    kinds = Counter(o.kind for o in outcomes)
    assert kinds[OutcomeKind.DOWNLOAD_FAILED] >= 1
    assert set(kinds) <= {OutcomeKind.DOWNLOAD_FAILED, OutcomeKind.PENDING}
    created = emulator.counters.creates
    assert created < 6
    filler.unlink()
    again, _ = await _run(session, tmp_path / "j.db", batch_items(6), out)
    assert {o.kind for o in again} == {OutcomeKind.COMPLETED}
    assert emulator.counters.creates == 6  # the download_failed rows were not created again


async def test_journal_write_failure_stops_the_run_and_loses_nothing(
    make_session: SessionFactory, emulator: Emulator, tmp_path: Path, small_tmpfs: Path
) -> None:
    """A journal that cannot be written stops the run with JournalError; the rerun finishes."""
    emulator.ignore_idempotency = True  # any resent create would show as a duplicate
    journal = small_tmpfs / "j.db"

    async def run_and_fill_the_disk() -> None:
        runner = BatchRunner(session, journal, concurrency=1, max_pending=1)
        async with runner:
            async for _ in runner.run(batch_items(30)):
                if not (small_tmpfs / "filler").exists():
                    fill_disk(small_tmpfs)

    async with make_session() as session:
        with pytest.raises(JournalError, match="cannot write journal"):
            await run_and_fill_the_disk()
    (small_tmpfs / "filler").unlink()
    async with make_session(retry_ambiguous_creates=False) as session:
        again, _ = await _run(session, journal, batch_items(30))
    assert emulator.counters.duplicate_creates == 0
    kinds = Counter(o.kind for o in again)
    assert set(kinds) <= {OutcomeKind.COMPLETED, OutcomeKind.AMBIGUOUS}
    assert kinds[OutcomeKind.AMBIGUOUS] <= 1


class MemoryJournal:
    """A second JournalStore, in a dict: the runner works with any store."""

    def __init__(self) -> None:
        self.rows: dict[str, JournalRow] = {}
        self.invalid: list[InvalidLine] = []
        self.invalid_run = ""
        self.path = Path("memory")

    def _set(self, key: str, **fields: Any) -> None:
        self.rows[key] = attrs.evolve(self.rows[key], **fields)

    async def aclose(self) -> None:
        """Nothing to release."""

    async def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        return {key: self.rows[key] for key in keys if key in self.rows}

    async def add(self, rows: Sequence[JournalRow]) -> None:
        self.rows.update((row.key, row) for row in rows)

    async def mark_seen(self, keys: Sequence[str], run: str) -> None:
        for key in keys:
            self._set(key, run=run)

    async def record_invalid(self, run: str, lines: Sequence[InvalidLine]) -> None:
        self.invalid = [*(self.invalid if self.invalid_run == run else []), *lines]
        self.invalid_run = run

    async def mark_submitting(self, key: str) -> None:
        self._set(key, state=State.SUBMITTING, sends=self.rows[key].sends + 1)

    async def mark_created(self, key: str, task_id: str | None, status: str | None) -> None:
        self._set(key, state=State.CREATED, task_id=task_id, status=status)

    async def mark_pending(self, key: str, error: str) -> None:
        self._set(key, state=State.PENDING, error=error)

    async def mark_ambiguous(self, key: str, error: str) -> None:
        self._set(key, error=error)

    async def mark_failed(self, key: str, error: str, *, usage: Usage | None = None) -> None:
        self._set(key, state=State.FAILED, error=error, usage=usage)

    async def mark_expired(self, key: str, error: str) -> None:
        self._set(key, state=State.EXPIRED, error=error)

    async def mark_unfinished(self, key: str, status: str | None, error: str) -> None:
        self._set(key, status=status, error=error)

    async def mark_completed(
        self, key: str, status: str, urls: Sequence[str], usage: Usage | None
    ) -> None:
        self._set(key, state=State.COMPLETED, status=status, urls=tuple(urls), usage=usage)

    async def mark_files(self, key: str, files: Sequence[str], digests: Sequence[str]) -> None:
        self._set(key, files=tuple(files), digests=tuple(digests), error=None)

    async def mark_download_failed(self, key: str, error: str) -> None:
        self._set(key, files=(), digests=(), error=error)


async def test_the_runner_runs_on_any_journal_store(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Another JournalStore plugs in without touching the runner; resume works through it."""
    store = MemoryJournal()
    async with BatchRunner(session, store, out_dir=tmp_path / "out") as runner:
        assert len([o async for o in runner.run(batch_items(5))]) == 5
    assert {row.state for row in store.rows.values()} == {State.COMPLETED}
    async with BatchRunner(session, store, out_dir=tmp_path / "out") as runner:
        again = [o async for o in runner.run(batch_items(5))]
    assert {o.source for o in again} == {Source.JOURNAL}
    assert emulator.counters.creates == 5


async def test_ignored_parameters_are_reported_once_naming_the_request_or_line(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A request from code is named by its key, a JSONL one by its line; neither twice."""
    gemini = ImageRequest(model="gemini-2.5-flash-image", prompt="a cat", size="512x512")
    items = [BatchItem("from-code", gemini), BatchItem("from-file", gemini, line=7)]
    with pytest.warns(IgnoredParameterWarning, match="ignores size") as caught:
        outcomes, _ = await _run(session, tmp_path / "j.db", items)
    assert [(w.filename, w.lineno) for w in caught] == [("<batch request 'from-code'>", 0)]
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    assert emulator.counters.creates == 2


async def test_strict_sessions_refuse_ignored_parameters_in_a_batch(
    make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """In strict mode the runner's row fails for good and nothing is created."""
    gemini = ImageRequest(model="gemini-2.5-flash-image", prompt="a cat", size="512x512")
    async with make_session(strict=True) as strict:
        outcomes, _ = await _run(strict, tmp_path / "j.db", [BatchItem("a", gemini)])
    assert [o.kind for o in outcomes] == [OutcomeKind.FAILED]
    assert "ignores size" in (outcomes[0].error or "")
    assert emulator.counters.create_requests == 0


async def test_unreadable_lines_are_outcomes_recorded_in_the_journal(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """iter_jsonl's output runs as it is: each bad line is an invalid outcome with its line
    number, journaled for later; the next run replaces them with its own."""
    prompts, journal = tmp_path / "p.jsonl", tmp_path / "j.db"
    prompts.write_text('{"id": "a", "prompt": "one"}\n{oops\n{"id": "a", "prompt": "two"}\n')
    async with BatchRunner(session, journal) as runner:
        outcomes = [o async for o in runner.run(iter_jsonl(prompts, defaults=DEFAULTS))]
    assert sorted((o.line, o.kind) for o in outcomes if o.line) == [
        (2, OutcomeKind.INVALID),
        (3, OutcomeKind.INVALID),
    ]
    assert runner.summary.counts == {"completed": 1, "invalid": 2}
    assert [(i.line, i.key) for i in iter_invalid_lines(journal)] == [(2, "line-2"), (3, "a")]
    prompts.write_text('{"id": "a", "prompt": "one"}\n')
    async with BatchRunner(session, journal) as runner:
        again = [o async for o in runner.run(iter_jsonl(prompts, defaults=DEFAULTS))]
    assert [o.kind for o in again] == [OutcomeKind.COMPLETED]
    assert list(iter_invalid_lines(journal)) == []
    assert emulator.counters.creates == 1


async def _restore_an_older_copy(
    session: Session, journal: Path, out: Path, *, before: int, after: int
) -> None:
    """Run `before` requests, copy the journal, run up to `after`, then put the copy back."""
    await _run(session, journal, batch_items(before), out)
    shutil.copyfile(journal, journal.with_name("backup.db"))
    await _run(session, journal, batch_items(after), out)
    os.replace(journal.with_name("backup.db"), journal)


async def test_a_restored_older_journal_is_refused_before_paying_again(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """The output directory's claim remembers how much the journal recorded: a journal found
    below that mark is refused before any create, and --new-journal accepts it on purpose."""
    emulator.ignore_idempotency = True
    journal, out = tmp_path / "out" / "j.db", tmp_path / "out"
    await _restore_an_older_copy(session, journal, out, before=2, after=5)
    with pytest.raises(JournalLostError, match="lost records: it holds 2 requests") as caught:
        await _run(session, journal, batch_items(5), out)
    assert "new_journal=True" in str(caught.value)
    assert emulator.counters.creates == 5
    async with BatchRunner(session, journal, out_dir=out, new_journal=True) as runner:
        assert len([o async for o in runner.run(batch_items(5))]) == 5
    assert emulator.counters.creates == 8  # the 3 forgotten requests, paid again as asked


async def test_without_a_claim_more_images_than_rows_means_lost_rows(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """An output directory of an older version (no claim) is judged by its images: more
    images than journal rows means the journal forgot requests."""
    journal, out = tmp_path / "out" / "j.db", tmp_path / "out"
    await _restore_an_older_copy(session, journal, out, before=2, after=5)
    (out / ".worldrouter-job").unlink(missing_ok=True)  # as an older version left it
    with pytest.raises(JournalLostError, match=r"knows 2 requests, but .* holds the images of 5"):
        await _run(session, journal, batch_items(5), out)
    assert emulator.counters.creates == 5


async def test_two_journals_cannot_share_an_output_directory(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A second journal on a claimed output directory is refused, naming both journals and
    the fix, even with new_journal; another output directory works."""
    out = tmp_path / "out"
    await _run(session, tmp_path / "a.db", batch_items(2), out)
    for new_journal in (False, True):
        with pytest.raises(OutputClaimedError) as caught:
            async with BatchRunner(
                session, tmp_path / "b.db", out_dir=out, new_journal=new_journal
            ):
                pass
        message = str(caught.value)
        assert str(tmp_path / "a.db") in message
        assert str(tmp_path / "b.db") in message
        assert "--journal" in message
        assert "another output directory" in message
    assert emulator.counters.creates == 2
    outcomes, _ = await _run(session, tmp_path / "b.db", batch_items(2), tmp_path / "other")
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    (tmp_path / "a.db").unlink()  # the owner's journal gone, its images kept: lost, not free
    with pytest.raises(JournalLostError, match="already holds images of the job journaled in"):
        await _run(session, tmp_path / "c.db", batch_items(2), out)
    for image in out.glob("*.png"):  # images deleted too: a new job may start there
        image.unlink()
    outcomes, _ = await _run(session, tmp_path / "c.db", batch_items(2), out)
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    assert emulator.counters.creates == 6


async def test_generate_output_in_the_folder_does_not_block_a_batch(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Images saved by generate are named after their task id, not a batch key: a batch into
    that folder starts (no claim, no journal) without a false 'would pay again' refusal."""
    out = tmp_path / "out"
    result = await session.generate("gpt-image-2", "a star")
    (saved,) = await session.download(result, out)
    assert saved.name.startswith("imgtask_")
    outcomes, _ = await _run(session, out / "journal.sqlite3", batch_items(2), out)
    assert {o.kind for o in outcomes} == {OutcomeKind.COMPLETED}
    assert emulator.counters.creates == 3


async def test_a_rerun_downloads_from_fresh_urls_when_the_stored_ones_expired(
    make_session: SessionFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """download_failed rows poll their task again before downloading: signed URLs expire,
    so the journaled ones answer 403 by the rerun, and the task gives fresh ones."""
    journal, out = tmp_path / "j.db", tmp_path / "out"
    emulator.inject("500", route="storage", count=3)
    async with make_session(retry=RetryPolicy(attempts=1)) as session:
        first, _ = await _run(session, journal, batch_items(3), out)
    assert {o.kind for o in first} == {OutcomeKind.DOWNLOAD_FAILED}
    emulator.expire_urls()
    async with make_session() as session:
        again, _ = await _run(session, journal, batch_items(3), out)
    assert {o.kind for o in again} == {OutcomeKind.COMPLETED}
    assert all(Path(f).read_bytes().startswith(b"\x89PNG") for o in again for f in o.files)
    assert all(url.endswith("?v=1") for r in read_rows(journal) for url in r.urls)
    assert emulator.counters.creates == 3
