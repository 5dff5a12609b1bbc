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
import subprocess
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

from worldrouter_async.testing import Emulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(240)]

PROMPTS = 48
WORKERS = 4
#: Seconds a worker's rows stay its own after it stopped answering, before others take them.
WORKER_TIMEOUT = "2"
FAST = ["--poll-initial", "0.02", "--poll-max", "0.1"]


@define(frozen=True)
class Job:
    """One shared job: the command every worker runs, its environment and its prompts."""

    command: list[str]
    env: dict[str, str]
    prompts: dict[str, str]  # id -> prompt
    logs: Path

    def status(self) -> dict[str, Any]:
        """``status --json`` of the job, as an operator would ask for it."""
        journal_flags = self.command[self.command.index("--journal") :][:4]
        done = subprocess.run(
            [sys.executable, "-m", "worldrouter_async", "status", *journal_flags, "--json"],
            env=self.env,
            capture_output=True,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr.decode()
        return dict(json.loads(done.stdout))


@contextmanager
def _log(path: Path) -> Iterator[IO[bytes]]:
    with path.open("ab") as file:
        yield file


async def _start(job: Job, worker: int) -> Process:
    """One worker: the job's command, its output appended to its own log file."""
    with _log(job.logs / f"worker-{worker}.log") as log:
        return await anyio.open_process(job.command, env=job.env, stdout=log, stderr=log)


async def run_workers(
    job: Job, *, kills: int, seed: int, first_kill_after: float = 0.5
) -> tuple[list[int | None], int]:
    """Run `WORKERS` copies of the job's command until each has exited on its own.

    Meanwhile SIGKILL a randomly chosen live worker at random moments, `kills` times, and
    start the same command in its place. Returns the exit codes of the last copies and the
    kills done (fewer than `kills` only if the job ended first).
    """
    rng = random.Random(seed)
    workers: list[Process] = []
    try:
        workers += [await _start(job, i) for i in range(WORKERS)]
        done_kills = 0
        await anyio.sleep(first_kill_after)
        with anyio.fail_after(150):
            while alive := [i for i, w in enumerate(workers) if w.returncode is None]:
                if done_kills < kills:
                    victim = rng.choice(alive)
                    await _kill(workers[victim])
                    workers[victim] = await _start(job, victim)
                    done_kills += 1
                await anyio.sleep(rng.uniform(0.1, 0.7) if done_kills < kills else 0.05)
        return [w.returncode for w in workers], done_kills
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
    return Job(command, env, prompts, logs)


def tasks_per_prompt(emulator: Emulator) -> Counter[str]:
    """How many tasks the server created (and billed) for each prompt."""
    return Counter(task.prompt for task in emulator.tasks.values())
