"""Memory and start-up of `worldrouter-async batch` on a huge JSONL file (issue #11).

Writes LINES prompts (~125 bytes each: 1.6 M lines is ~200 MB, as in the issue), starts the CLI as a
subprocess against an in-process emulator, and reports the time to the first create, the
creates after RUN_SECONDS, and the CLI's peak RSS once it is stopped with SIGTERM (which also
exercises the graceful stop on a big job).

    python benchmarks/batch_memory.py [LINES] [RUN_SECONDS]
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from worldrouter_async.testing import Emulator


def write_prompts(path: Path, lines: int) -> None:
    with path.open("w", encoding="utf-8") as file:
        for i in range(lines):
            prompt = f"a watercolour lighthouse at dusk, gulls, long exposure, soft light, #{i:08d}"
            file.write(json.dumps({"id": f"p{i:08d}", "prompt": prompt}) + "\n")


async def main(lines: int, run_seconds: float) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        prompts = Path(scratch) / "prompts.jsonl"
        write_prompts(prompts, lines)
        size_mb = prompts.stat().st_size / 1e6
        async with Emulator(time_scale=0.001, record_requests=False) as emulator:
            env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDROUTER_")}
            env["WORLDROUTER_API_KEY"] = emulator.api_key
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worldrouter_async", "batch", str(prompts),
                "--out", str(Path(scratch) / "out"), "--model", "gpt-image-2",
                "--concurrency", "16", "--plain", "--base-url", emulator.base_url,
                "--poll-initial", "0.01", "--poll-max", "0.05",
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            while emulator.counters.creates == 0 and process.returncode is None:  # noqa: ASYNC110 - polls another process's effect
                await asyncio.sleep(0.01)
            first_create = time.monotonic() - started
            await asyncio.sleep(run_seconds)
            creates = emulator.counters.creates
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"lines                {lines} ({size_mb:.0f} MB)")
    print(f"first create after   {first_create:.2f} s")
    print(f"creates in {run_seconds:.0f} s      {creates}")
    print(f"CLI peak RSS         {peak_mb:.0f} MB")
    print(f"exit code            {process.returncode} ({stderr.decode().strip()[-80:]})")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_600_000,
                     float(sys.argv[2]) if len(sys.argv) > 2 else 20.0))  # fmt: skip
