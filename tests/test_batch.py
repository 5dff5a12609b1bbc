"""The resumable runner through its Python API: journal first, resume without double creates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worldrouter_async import ImageRequest, Session
from worldrouter_async.batch import (
    BatchItem,
    BatchRunner,
    JournalRow,
    Outcome,
    OutcomeKind,
    Source,
    State,
    read_jsonl,
    read_rows,
)
from worldrouter_async.batch._journal import SqliteFile
from worldrouter_async.testing import Emulator

from .conftest import SessionFactory

pytestmark = pytest.mark.anyio


def _requests(count: int, *, marker: str = "") -> list[BatchItem]:
    return [
        BatchItem(f"r{i}", ImageRequest(model="gpt-image-2", prompt=f"{marker}prompt {i}"))
        for i in range(count)
    ]


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
    outcomes, runner = await _run(session, tmp_path / "j.db", _requests(12), tmp_path / "out")
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
    await _run(session, tmp_path / "j.db", _requests(5), tmp_path / "out")
    outcomes, runner = await _run(session, tmp_path / "j.db", _requests(5), tmp_path / "out")
    assert {o.source for o in outcomes} == {Source.JOURNAL}
    assert runner.summary.ok
    assert emulator.counters.creates == 5
    assert emulator.counters.storage_requests == 5


async def test_resume_redownloads_only_missing_files(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """Deleting one image and rerunning fetches that image alone."""
    outcomes, _ = await _run(session, tmp_path / "j.db", _requests(4), tmp_path / "out")
    Path(outcomes[0].files[0]).unlink()
    again, _ = await _run(session, tmp_path / "j.db", _requests(4), tmp_path / "out")
    assert all(Path(f).exists() for o in again for f in o.files)
    assert emulator.counters.storage_requests == 5
    assert emulator.counters.creates == 4


async def test_created_tasks_are_tracked_not_recreated(
    session: Session, emulator: Emulator, tmp_path: Path
) -> None:
    """A journal row with a task ID is tracked by ID on resume."""
    items = _requests(3)
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
    items = _requests(1)
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
    items = _requests(1)
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
    items = _requests(1)
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
    items = [*_requests(1, marker="[fail] "), *_requests(2)[1:]]
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
    await _run(session, tmp_path / "j.db", _requests(1))
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
