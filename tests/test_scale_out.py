"""Four workers on one job, killed at random: a PostgreSQL journal, S3 outputs, real processes.

Each worker is ``python -m worldrouter_async batch ...`` in its own process, the same command
for all, against a real PostgreSQL server (the ``pgserver`` fixture), a real S3 API (moto's
server) and the emulator on loopback. A seeded random number generator picks which worker
dies (SIGKILL) and when; a killed worker is started again with the same command, as an
orchestrator restarts a pod. The emulator's own records then say what was paid for.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from anyio.abc import Process
from attrs import define

from worldrouter_async.batch import JournalRow, OutcomeKind, PostgresJournal, kind_of
from worldrouter_async.testing import Emulator
from worldrouter_async.testing._png import PNG_SIGNATURE

from .s3 import Bucket

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(240)]

PROMPTS = 40
WORKERS = 4
#: Seconds a worker's rows stay its own after it stopped answering, before others take them.
WORKER_TIMEOUT = "2"
STATUS = [sys.executable, "-m", "worldrouter_async", "status"]
FAST = ["--poll-initial", "0.02", "--poll-max", "0.1"]


@define(frozen=True)
class Job:
    """One shared job: the command every worker runs, its environment and its prompts."""

    command: list[str]
    env: dict[str, str]
    prompts: dict[str, str]  # id -> prompt
    logs: Path

    journal: str
    name: str

    async def status(self) -> dict[str, Any]:
        """``status --json`` of the job, as an operator would ask for it."""
        done = await anyio.run_process(
            [*STATUS, "--journal", self.journal, "--job", self.name, "--json"],
            env=self.env,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr.decode()
        return dict(json.loads(done.stdout))

    async def rows(self) -> dict[str, JournalRow]:
        """Every row of the job as the journal holds it, read without joining the job."""
        journal = await PostgresJournal(self.journal, job=self.name).open(join=False)
        try:
            return {row.key: row async for row in journal.iter_rows()}
        finally:
            await journal.aclose()


@contextmanager
def _log(path: Path) -> Iterator[IO[bytes]]:
    with path.open("ab") as file:
        yield file


async def _start(job: Job, worker: int) -> Process:
    """One worker: the job's command, its output appended to its own log file."""
    with _log(job.logs / f"worker-{worker}.log") as log:
        return await anyio.open_process(job.command, env=job.env, stdout=log, stderr=log)


async def run_workers(job: Job, emulator: Emulator, *, kills: int, seed: int) -> list[int | None]:
    """Run `WORKERS` copies of the job's command until each has exited on its own.

    Meanwhile SIGKILL a randomly chosen live worker `kills` times, at moments drawn at random
    from the job's progress (creates plus image downloads the emulator has served, so each
    kill lands while there is work, however fast the machine), and each time start the same
    command in its place. Returns the exit codes of the last copies.
    """
    rng = random.Random(seed)
    moments = sorted(rng.sample(range(1, PROMPTS * 3 // 2), kills))
    workers: list[Process] = []
    try:
        workers += [await _start(job, i) for i in range(WORKERS)]
        with anyio.fail_after(150):
            while alive := [i for i, w in enumerate(workers) if w.returncode is None]:
                progress = emulator.counters.creates + emulator.counters.storage_requests
                if moments and progress >= moments[0]:
                    moments.pop(0)
                    victim = rng.choice(alive)
                    await _kill(workers[victim])
                    workers[victim] = await _start(job, victim)
                await anyio.sleep(0.01)
        assert not moments, "the job ended before every kill"
        return [w.returncode for w in workers]
    finally:
        with anyio.CancelScope(shield=True):
            for process in workers:
                await _kill(process)


async def _kill(process: Process) -> None:
    """SIGKILL `process` if it still runs (no cleanup, no goodbye to the database); reap it."""
    if process.returncode is None:
        process.kill()
    await process.aclose()


# --- the job and what it left ------------------------------------------------------------


def make_job(emulator: Emulator, bucket: Bucket, journal: str, tmp_path: Path, name: str) -> Job:
    """`PROMPTS` distinct prompts and the one command every worker of job `name` runs."""
    prompts = {f"p{i:02d}": f"a lighthouse at dusk, #{i}" for i in range(PROMPTS)}
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": k, "prompt": p}) + "\n" for k, p in prompts.items()))
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [
        sys.executable,
        "-m",
        "worldrouter_async",
        "batch",
        str(path),
        "--journal",
        journal,
        "--job",
        name,
        "--worker-timeout",
        WORKER_TIMEOUT,
        "--out",
        bucket.url(name),
        "--concurrency",
        "2",
        "--plain",
        "--base-url",
        emulator.base_url,
        *FAST,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDROUTER_")}
    env["WORLDROUTER_API_KEY"] = emulator.api_key
    return Job(command, env, prompts, logs, journal, name)


def tasks_per_prompt(emulator: Emulator) -> Counter[str]:
    """How many tasks the server created (and billed) for each prompt."""
    return Counter(task.prompt for task in emulator.tasks.values())


async def settled(job: Job, emulator: Emulator, bucket: Bucket) -> tuple[set[str], set[str]]:
    """Check what the job left and return its completed and its ambiguous prompts.

    No prompt was paid for twice (one server task at most per prompt, whatever the server
    does with Idempotency-Key); every completed row's images are in the bucket with the
    bytes the journal's digests name; every other prompt is ambiguous; and `status` counts
    the same.
    """
    assert max(tasks_per_prompt(emulator).values()) == 1
    assert emulator.counters.duplicate_creates == 0
    rows = await job.rows()
    assert rows.keys() == job.prompts.keys()
    kinds = {key: kind_of(row) for key, row in rows.items()}
    completed = {key for key, kind in kinds.items() if kind == OutcomeKind.COMPLETED}
    ambiguous = {key for key, kind in kinds.items() if kind == OutcomeKind.AMBIGUOUS}
    assert completed | ambiguous == set(job.prompts), Counter(kinds.values())
    images = sorted(f"{job.name}/{name}" for key in completed for name in rows[key].files)
    stored = await anyio.to_thread.run_sync(bucket.keys, f"{job.name}/")
    assert [key for key in stored if not key.endswith("/.worldrouter-job")] == images
    for key in completed:
        row = rows[key]
        assert len(row.files) == 1, row
        data = await anyio.to_thread.run_sync(bucket.get, f"{job.name}/{row.files[0]}")
        assert data is not None
        assert data.startswith(PNG_SIGNATURE)
        assert hashlib.sha256(data).hexdigest() == row.digests[0]
        assert tasks_per_prompt(emulator)[job.prompts[key]] == 1
    status = await job.status()
    expected = {"completed": len(completed), "ambiguous": len(ambiguous)}
    assert status["counts"] == {kind: n for kind, n in expected.items() if n}
    return completed, ambiguous


async def test_killed_workers_never_pay_twice_against_a_server_ignoring_idempotency_keys(
    emulator: Emulator, s3_bucket: Bucket, postgres_url: str, tmp_path: Path
) -> None:
    """Four workers, six of them SIGKILLed at random and restarted, against a server that
    bills every create: each prompt is paid at most once, and ends with its image in the
    bucket or reported ambiguous (the lost create answers are among the ambiguous)."""
    emulator.time_scale = 0.02  # a gpt-image-2 task takes about 0.5 s
    emulator.ignore_idempotency = True
    emulator.inject("drop_after_create", route="create", count=2)  # created, answer lost
    job = make_job(emulator, s3_bucket, postgres_url, tmp_path, "no-dedup")
    codes = await run_workers(job, emulator, kills=6, seed=18)
    assert codes == [0] * WORKERS, [p.read_text()[-2000:] for p in job.logs.iterdir()]
    completed, ambiguous = await settled(job, emulator, s3_bucket)
    assert len(ambiguous) >= 2  # the two dropped answers, and any create a kill cut off
    assert len(completed) == PROMPTS - len(ambiguous)


async def test_killed_workers_with_retry_ambiguous_finish_every_prompt_on_a_deduplicating_server(
    emulator: Emulator, s3_bucket: Bucket, postgres_url: str, tmp_path: Path
) -> None:
    """The same chaos against a server that deduplicates creates by Idempotency-Key, with
    --retry-ambiguous: every prompt ends with its image in the bucket, one task each."""
    emulator.time_scale = 0.02
    emulator.inject("drop_after_create", route="create", count=2)
    job = make_job(emulator, s3_bucket, postgres_url, tmp_path, "dedup")
    job.command.append("--retry-ambiguous")
    codes = await run_workers(job, emulator, kills=6, seed=19)
    assert codes == [0] * WORKERS, [p.read_text()[-2000:] for p in job.logs.iterdir()]
    completed, _ = await settled(job, emulator, s3_bucket)
    assert completed == set(job.prompts)
    assert emulator.counters.idempotent_replays >= 2  # the dropped answers, resent by key


async def test_a_rerun_after_every_worker_died_finishes_the_job(
    emulator: Emulator, s3_bucket: Bucket, postgres_url: str, tmp_path: Path
) -> None:
    """All four workers killed at once, one of them mid-create: one rerun of the same
    command finishes the job and exits 0 with the unanswered create reported ambiguous;
    with --retry-ambiguous (the server deduplicates) it completes too; a rerun of a finished
    job exits 0 at once without sending anything."""
    emulator.time_scale = 0.02
    job = make_job(emulator, s3_bucket, postgres_url, tmp_path, "all-died")
    workers = [await _start(job, i) for i in range(WORKERS)]
    try:
        with anyio.fail_after(60):
            while emulator.counters.creates < PROMPTS // 3:
                await anyio.sleep(0.01)
            emulator.inject("hang_after_create", route="create")
            while not emulator.counters.faults["hang_after_create"]:
                await anyio.sleep(0.01)
    finally:
        for process in workers:
            await _kill(process)
    rerun = await anyio.run_process(job.command, env=job.env, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert "--retry-ambiguous" in rerun.stderr.decode()  # the command that resends it
    completed, ambiguous = await settled(job, emulator, s3_bucket)
    assert len(ambiguous) >= 1  # the hung create at least
    retried = await anyio.run_process([*job.command, "--retry-ambiguous"], env=job.env, check=False)
    assert retried.returncode == 0, retried.stderr.decode()
    completed, _ = await settled(job, emulator, s3_bucket)
    assert completed == set(job.prompts)
    sent = emulator.counters.create_requests
    again = await anyio.run_process(job.command, env=job.env, check=False)
    assert again.returncode == 0, again.stderr.decode()
    assert emulator.counters.create_requests == sent
