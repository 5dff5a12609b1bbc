"""The journal cannot forget, driven through the CLI as a subprocess: kill -9 and lost sidecar
files, an older copy put back, a second journal on one --out, against an emulator that
ignores Idempotency-Key (so any resent create is a second paid task)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import anyio
import pytest

from worldrouter_async.batch import State, read_rows
from worldrouter_async.testing import Emulator

from .test_cli import _batch_command, _env, _kill_when, _write_prompts

pytestmark = pytest.mark.anyio

SIDECARS = ("-wal", "-shm", "-journal")


@pytest.mark.parametrize("kill_at", ["creates", "downloads"])
async def test_kill_9_then_losing_the_sidecar_files_never_pays_twice(
    emulator: Emulator, tmp_path: Path, kill_at: str
) -> None:
    """Killed mid-create or mid-download, then its -wal, -shm and -journal deleted (as a copy
    of the journal file alone leaves it), a rerun pays for no prompt twice: one task each."""
    count = 40
    emulator.time_scale = 0.03  # a gpt-image-2 task takes ~0.75 s: some are still running
    emulator.ignore_idempotency = True
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    journal = out / "journal.sqlite3"
    _write_prompts(prompts, count)
    command = _batch_command(emulator, prompts, out)
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    async with await anyio.open_process(command, env=env) as first:
        if kill_at == "creates":
            await _kill_when(first, lambda: emulator.counters.creates >= 12)
        else:
            await _kill_when(first, lambda: emulator.counters.storage_requests >= 6)
    for suffix in SIDECARS:
        journal.with_name(journal.name + suffix).unlink(missing_ok=True)
    final = await anyio.run_process(command, env=env, check=False)
    per_prompt = Counter(task.prompt for task in emulator.tasks.values())
    assert per_prompt.most_common(1)[0][1] == 1, per_prompt.most_common(3)
    assert emulator.counters.duplicate_creates == 0
    rows = read_rows(journal)
    ambiguous = [row for row in rows if row.state == State.SUBMITTING]  # cut off by the kill
    assert len(ambiguous) <= 4  # at most the creates in flight (--concurrency 4)
    assert all(row.state == State.COMPLETED for row in rows if row not in ambiguous)
    assert final.returncode == (1 if ambiguous else 0), final.stderr
    assert len(per_prompt) >= count - len(ambiguous)


async def test_a_journal_that_lost_records_stops_the_cli_with_exit_2(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun on an older copy of the journal exits 2 before any create, saying what
    happened and what to do."""
    emulator.ignore_idempotency = True
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    journal = out / "journal.sqlite3"
    command = _batch_command(emulator, prompts, out)
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    _write_prompts(prompts, 2)
    assert (await anyio.run_process(command, env=env, check=False)).returncode == 0
    shutil.copyfile(journal, tmp_path / "backup.sqlite3")
    _write_prompts(prompts, 5)
    assert (await anyio.run_process(command, env=env, check=False)).returncode == 0
    shutil.copyfile(tmp_path / "backup.sqlite3", journal)
    done = await anyio.run_process(command, env=env, check=False)
    message = done.stderr.decode()
    assert done.returncode == 2, message
    assert "lost records: it holds 2 requests and 2 creates sent" in message
    assert "--new-journal" in message
    assert emulator.counters.creates == 5


async def test_a_second_journal_on_one_out_stops_the_cli_with_exit_2(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A second --journal on a claimed --out is refused, naming both journals and the fix."""
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out"
    _write_prompts(prompts, 2)
    env = _env(WORLDROUTER_API_KEY=emulator.api_key)
    first = await anyio.run_process(_batch_command(emulator, prompts, out), env=env, check=False)
    assert first.returncode == 0, first.stderr
    other = tmp_path / "other.sqlite3"
    command = _batch_command(emulator, prompts, out, "--journal", str(other))
    done = await anyio.run_process(command, env=env, check=False)
    message = done.stderr.decode()
    assert done.returncode == 2, message
    assert str(out / "journal.sqlite3") in message
    assert str(other) in message
    assert "--journal" in message
    assert "--out" in message
    assert emulator.counters.creates == 2
