"""Answers are checked before they are believed: each broken answer a gateway, a replica or
a buggy backend gives, over a real socket (`tests/hostile.py`), through the session and
through the batch runner."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from worldrouter_async import (
    AmbiguousCreateError,
    ImageRequest,
    NoImagesError,
    PollPolicy,
    Session,
    TaskFailedError,
    TaskMismatchError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnpollableTaskIdError,
)
from worldrouter_async.batch import (
    BatchItem,
    BatchRunner,
    Outcome,
    OutcomeKind,
    Source,
    State,
    read_rows,
)
from worldrouter_async.testing import FAST_RETRY, FakeClock

from .hostile import HostileServer

pytestmark = pytest.mark.anyio

MODEL = "gpt-image-2"
#: Polls every second, at most every 20 s, so "polled at max_interval" shows in poll counts.
SLOW_POLL = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=20.0, jitter=0.0, adaptive=False)
#: Millisecond polls on the system clock, with the default 30 s grace for a 404.
QUICK_POLL = PollPolicy(initial_delay=0.005, max_interval=0.02, jitter=0.0)


@asynccontextmanager
async def _session(
    hostile: HostileServer, clock: FakeClock | None = None, **options: Any
) -> AsyncIterator[Session]:
    settings: dict[str, Any] = {"poll": SLOW_POLL if clock else QUICK_POLL, "retry": FAST_RETRY}
    if clock is not None:
        settings["clock"] = clock
    async with Session("k", hostile.base_url, **{**settings, **options}) as session:
        yield session


# --- a completed task must carry an image ------------------------------------------------


@pytest.mark.parametrize("task_id", ["nodata-1", "noitems-1", "blankitem-1"])
async def test_completed_without_an_image_ends_with_no_images_error_keeping_the_receipt(
    hostile: HostileServer, task_id: str
) -> None:
    """'completed' without data, with data [] or with an empty item is NoImagesError, a
    TaskFailedError that keeps the task id, the usage and the answer's request id."""
    async with _session(hostile) as session:
        handle = await session.submit(MODEL, task_id)
        with pytest.raises(NoImagesError) as caught:
            await handle
        stats = session.stats
    error = caught.value
    assert isinstance(error, TaskFailedError)
    assert error.task_id == task_id
    assert error.usage is not None
    assert error.usage.total_tokens == 103
    assert error.request_id == f"req-{task_id}-1"
    assert f"task {task_id} completed without any image" in str(error)
    assert "103 tokens" in str(error)
    assert f"req-{task_id}-1" in str(error)
    assert handle.status == "completed"
    assert (stats.completed, stats.failed, stats.usage.total_tokens) == (0, 1, 103)


async def test_completed_with_an_inline_image_is_believed(hostile: HostileServer) -> None:
    """'completed' with OpenAI-style b64_json items is a result, not a poll until the deadline."""
    clock = FakeClock()
    async with _session(hostile, clock, task_timeout=60.0) as session:
        result = await session.generate(MODEL, "b64-1")
    assert result.task_id == "b64-1"
    assert result.task.data[0].b64_json
    assert hostile.polls["b64-1"] == 1


async def test_a_poll_answer_without_an_id_is_about_the_task_asked_for(
    hostile: HostileServer,
) -> None:
    """A poll answer that leaves out 'id' and 'task_id' is read as the task polled."""
    clock = FakeClock()
    async with _session(hostile, clock, task_timeout=60.0) as session:
        result = await session.generate(MODEL, "noid-1")
    assert (result.task_id, result.task.id) == ("noid-1", "noid-1")
    assert result.urls == (f"{hostile.origin}/img/mine",)
    assert hostile.polls["noid-1"] == 1


async def test_a_create_answer_without_an_id_is_ambiguous_and_says_why(
    hostile: HostileServer,
) -> None:
    """A create's id is its receipt: an answer without one may have created a task, so it
    is AmbiguousCreateError naming what was missing, never a handle without an id."""
    async with _session(hostile) as session:
        with pytest.raises(AmbiguousCreateError, match="carries no task id") as caught:
            await session.submit(MODEL, "x", extra={"answer_id": None})
    assert "req-create-1" in str(caught.value)
    assert hostile.creates == 1


# --- an answer about another task is not believed ---------------------------------------


async def test_an_answer_about_another_task_is_refused_and_the_task_polled_again(
    hostile: HostileServer,
) -> None:
    """A poll answered about another task id never becomes this task's result: the next
    poll's answer, about the right task, does."""
    clock = FakeClock()
    async with _session(hostile, clock, task_timeout=60.0) as session:
        result = await session.generate(MODEL, "mismatchonce-1")
    assert result.urls == (f"{hostile.origin}/img/mine",)
    assert hostile.polls["mismatchonce-1"] == 2


async def test_answers_only_about_another_task_end_at_the_deadline_naming_both_ids(
    hostile: HostileServer,
) -> None:
    """Only wrong answers until the deadline: TaskTimeoutError caused by TaskMismatchError,
    which names the id asked for, the id answered and the answer's request id."""
    clock = FakeClock()
    async with _session(hostile, clock) as session:
        handle = await session.submit(MODEL, "mismatch-1", timeout=60.0)
        with pytest.raises(TaskTimeoutError, match="TaskMismatchError") as caught:
            await handle
    mismatch = caught.value.__cause__
    assert isinstance(mismatch, TaskMismatchError)
    assert (mismatch.task_id, mismatch.answered_id) == ("mismatch-1", "imgtask_someone_else")
    assert mismatch.request_id == f"req-mismatch-1-{hostile.polls['mismatch-1']}"
    assert hostile.polls["mismatch-1"] > 1


async def test_retrieve_refuses_an_answer_about_another_task(hostile: HostileServer) -> None:
    """The low-level retrieve retries a wrong answer, then raises TaskMismatchError."""
    async with _session(hostile) as session:
        with pytest.raises(TaskMismatchError, match="answered about task imgtask_someone_else"):
            await session.tasks.retrieve("mismatch-2")
    assert hostile.polls["mismatch-2"] == FAST_RETRY.attempts


# --- a 404 just after the create --------------------------------------------------------


async def test_a_404_within_the_grace_after_the_create_is_polled_again(
    hostile: HostileServer,
) -> None:
    """A task this session created that answers 404 on its first polls (a replica that does
    not know it yet) completes; a task attached by id ends at its first 404, as before."""
    clock = FakeClock()
    async with _session(hostile, clock) as session:
        result = await session.generate(MODEL, "late-1")
        with pytest.raises(TaskNotFoundError):
            await session.track("late-2")
    assert result.urls == (f"{hostile.origin}/img/mine",)
    assert (hostile.polls["late-1"], hostile.polls["late-2"]) == (3, 1)


async def test_a_404_after_the_grace_ends_the_handle(hostile: HostileServer) -> None:
    """404s for longer than `not_found_grace` (on the session's clock) end the handle with
    TaskNotFoundError once the grace has passed."""
    clock = FakeClock()
    poll = PollPolicy(initial_delay=1.0, factor=1.0, max_interval=1.0, not_found_grace=30.0)
    async with _session(hostile, clock, poll=poll, task_timeout=600.0) as session:
        handle = await session.submit(MODEL, "gone-1")
        created = clock.now()
        with pytest.raises(TaskNotFoundError) as caught:
            await handle
        ended = clock.now()
    assert caught.value.task_id == "gone-1"
    assert created + 30.0 <= ended < created + 40.0
    assert hostile.polls["gone-1"] > 2


async def test_the_404_grace_runs_in_real_time(hostile: HostileServer) -> None:
    """On the system clock too, a late task completes and a gone one ends."""
    poll = PollPolicy(initial_delay=0.01, max_interval=0.05, not_found_grace=2.0)
    async with _session(hostile, poll=poll) as session:
        with anyio.fail_after(30):
            late = await session.generate(MODEL, "late-3")
            with pytest.raises(TaskNotFoundError):
                await session.generate(MODEL, "gone-3")
    assert late.task_id == "late-3"
    assert hostile.polls["gone-3"] > 1


# --- task ids ---------------------------------------------------------------------------


async def test_a_created_id_with_a_slash_is_polled_as_one_encoded_segment(
    hostile: HostileServer,
) -> None:
    """An id containing '/' is kept and polled as %2F, never dropped or split."""
    async with _session(hostile) as session:
        result = await session.generate(MODEL, "ok/a/../b")
    assert result.task_id == "ok/a/../b"
    assert hostile.raw_paths == ["/v1/images/generation_tasks/ok%2Fa%2F..%2Fb"]


@pytest.mark.parametrize("answer", ["", "  ", ".", ".."])
async def test_a_created_id_no_poll_can_name_keeps_the_receipt(
    hostile: HostileServer, answer: str
) -> None:
    """A blank, '.' or '..' id from a create ends the handle with UnpollableTaskIdError,
    which keeps the create's answer, its id and request id; nothing is polled."""
    async with _session(hostile) as session:
        handle = await session.submit(MODEL, "x", extra={"answer_id": answer})
        with pytest.raises(UnpollableTaskIdError) as caught:
            await handle
        assert session.stats.failed == 1
    error = caught.value
    assert (handle.task_id, error.task_id, error.task.id) == (answer, answer, answer)
    assert error.request_id == "req-create-1"
    assert "req-create-1" in str(error)
    assert "may be billed" in str(error)
    assert hostile.raw_paths == []  # no poll


# --- statuses no docs name --------------------------------------------------------------


@pytest.mark.parametrize("status", ["cancelled", "expired"])
async def test_an_undocumented_status_is_shown_and_polled_at_the_longest_interval(
    hostile: HostileServer, status: str
) -> None:
    """'cancelled' or 'expired' is kept as the server wrote it (handle, status stream,
    deadline message) and polled every max_interval until the deadline."""
    clock = FakeClock()
    task_id = f"{status}-1"
    async with _session(hostile, clock) as session:
        changes = session.status_changes()
        handle = await session.submit(MODEL, task_id, timeout=100.0)
        with pytest.raises(TaskTimeoutError, match=f"last status '{status}'") as caught:
            await handle
    seen = [change.new async for change in changes]
    assert handle.status == status
    assert seen[0] == status
    # First poll at 1 s, then every 20 s: 1, 21, 41, 61, 81 (not once a second).
    assert hostile.polls[task_id] == 5
    assert "which the API documentation does not name" in str(caught.value)
    assert f"request_id='req-{task_id}-5'" in str(caught.value)


# --- the batch runner -------------------------------------------------------------------


def _items(*prompts: str, **extra: Any) -> list[BatchItem]:
    return [
        BatchItem(f"r{i}", ImageRequest(model=MODEL, prompt=prompt, extra=extra))
        for i, prompt in enumerate(prompts)
    ]


async def _run_batch(
    session: Session, tmp_path: Path, items: list[BatchItem], **options: Any
) -> dict[str, Outcome]:
    async with BatchRunner(
        session, tmp_path / "j.db", out_dir=tmp_path / "out", concurrency=4, **options
    ) as runner:
        return {outcome.key: outcome async for outcome in runner.run(items)}


async def _run_twice(
    hostile: HostileServer,
    tmp_path: Path,
    items: list[BatchItem],
    check: Callable[[Outcome], None],
    **options: Any,
) -> None:
    """Run `items`, check the outcome, rerun: nothing is created again, the rerun agrees."""
    for run in (1, 2):
        async with _session(hostile) as session:
            (outcome,) = (await _run_batch(session, tmp_path, items, **options)).values()
        assert not outcome.ok, f"run {run}"
        check(outcome)
    assert hostile.creates == 1


async def test_batch_reports_a_completed_task_without_images_as_failed_with_its_receipt(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Such a row is 'failed' with its task id and usage, in the outcome and the journal,
    and a rerun reports it so from the journal, never as completed."""

    def check(outcome: Outcome) -> None:
        assert (outcome.kind, outcome.task_id) == (OutcomeKind.FAILED, "noitems-1")
        assert outcome.usage is not None
        assert outcome.usage.total_tokens == 103
        assert outcome.error
        assert "completed without any image" in outcome.error

    await _run_twice(hostile, tmp_path, _items("noitems-1"), check)
    (row,) = read_rows(tmp_path / "j.db")
    assert (row.state, row.task_id) == (State.FAILED, "noitems-1")
    assert row.usage is not None
    assert row.usage.total_tokens == 103
    assert hostile.polls["noitems-1"] == 1
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("answer", ["..", ""])
async def test_batch_journals_a_created_id_no_poll_can_name(
    hostile: HostileServer, tmp_path: Path, answer: str
) -> None:
    """An id like '..' or '' is journaled, reported 'unfinished' with the receipt, and a
    rerun reports it again from the journal instead of failing or creating it again."""

    def check(outcome: Outcome) -> None:
        assert (outcome.kind, outcome.task_id) == (OutcomeKind.UNFINISHED, answer)
        assert outcome.error
        assert "no poll URL can name" in outcome.error
        assert "req-create-1" in outcome.error

    await _run_twice(hostile, tmp_path, _items("x", answer_id=answer), check)
    (row,) = read_rows(tmp_path / "j.db")
    assert (row.state, row.task_id) == (State.CREATED, answer)
    assert hostile.raw_paths == []  # no poll


async def test_batch_believes_only_answers_that_hold(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Late 404s, a wrong task's answer, an id with '/' and an answer without an id all end
    'completed' with this task's own image; an undocumented status ends 'unfinished',
    naming it."""
    items = _items("late-1", "mismatchonce-1", "ok/a", "noid-1", "cancelled-1")
    async with _session(hostile) as session:
        outcomes = await _run_batch(session, tmp_path, items, timeout=2.0)
    completed = {key: o for key, o in outcomes.items() if o.kind == OutcomeKind.COMPLETED}
    assert sorted(completed) == ["r0", "r1", "r2", "r3"]
    assert all(o.urls == (f"{hostile.origin}/img/mine",) and o.files for o in completed.values())
    assert outcomes["r2"].task_id == "ok/a"
    assert "/v1/images/generation_tasks/ok%2Fa" in hostile.raw_paths
    unfinished = outcomes["r4"]
    assert (unfinished.kind, unfinished.source) == (OutcomeKind.UNFINISHED, Source.NEW)
    assert unfinished.error
    assert "last status 'cancelled'" in unfinished.error
    assert {row.key: row.task_id for row in read_rows(tmp_path / "j.db")}["r2"] == "ok/a"


async def test_the_batch_command_exits_1_for_a_task_completed_without_images(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """`worldrouter-async batch` (a real subprocess) reports such a row failed, with what
    the answer lacked, and exits 1, on the run and on the rerun; `status` agrees."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "prompt": "nodata-1"}) + "\n")
    out = tmp_path / "out"
    fast = ["--base-url", hostile.base_url, "--poll-initial", "0.005", "--poll-max", "0.02"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDROUTER_")}
    env["WORLDROUTER_API_KEY"] = "k"

    async def cli(*args: str) -> str:
        done = await anyio.run_process(
            [sys.executable, "-m", "worldrouter_async", *args], env=env, check=False
        )
        assert done.returncode == 1, done.stderr
        return done.stdout.decode()

    for _ in range(2):
        printed = await cli("batch", str(prompts), "--out", str(out), *fast)
        assert "p0 failed" in printed
        assert "completed without any image" in printed
    assert "p0 (failed, task nodata-1)" in await cli("status", str(out / "journal.sqlite3"))
    assert (hostile.creates, hostile.polls["nodata-1"]) == (1, 1)
