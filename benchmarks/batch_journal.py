"""Requests per second of `BatchRunner` against the in-process emulator: the journal's cost.

Every request commits four or five journal writes, each synced to disk; this measures what
that leaves of the run's rate, with and without downloads (median of three runs each).

    python benchmarks/batch_journal.py [REQUESTS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from worldrouter_async import ImageRequest, Session
from worldrouter_async.batch import BatchItem, BatchRunner
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator


async def rate(requests: int, *, downloads: bool) -> float:
    """Requests per second of one run of `requests` requests, 32 at a time."""
    with tempfile.TemporaryDirectory() as scratch:
        items = [
            BatchItem(f"k{i}", ImageRequest(model="gpt-image-2", prompt=f"a lighthouse, #{i}"))
            for i in range(requests)
        ]
        out = Path(scratch) / "out" if downloads else None
        async with (
            Emulator(time_scale=0.0002, record_requests=False) as emulator,
            Session(emulator.api_key, emulator.base_url, poll=FAST_POLL, retry=FAST_RETRY) as s,
        ):
            started = time.perf_counter()
            async with BatchRunner(s, Path(scratch) / "j.db", out_dir=out, concurrency=32) as run:
                done = [outcome async for outcome in run.run(items)]
            assert len(done) == requests
            return requests / (time.perf_counter() - started)


def main(requests: int) -> None:
    for downloads in (False, True):
        rates = [asyncio.run(rate(requests, downloads=downloads)) for _ in range(3)]
        label = "with out_dir   " if downloads else "without out_dir"
        print(f"{label}: {statistics.median(rates):6.0f} requests/s (median of 3)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
