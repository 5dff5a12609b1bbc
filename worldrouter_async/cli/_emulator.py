"""``emulator`` and ``demo``: the bundled WorldRouter emulator, served or driven by a batch.

The only commands that need `worldrouter_async.testing` (and aiohttp's server) import it
inside the command, so every other command starts without loading it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Final

from .._config import PollPolicy, RetryPolicy
from .._session import Session
from ..batch import read_jsonl
from ._batch import report_stops, run_with_progress
from ._errors import EXIT_FAILED, EXIT_OK, UsageError
from ._single import check_out_dir

DEMO_SUBJECTS: Final = (
    "a lighthouse at dusk",
    "a paper crane",
    "a red kite over hills",
    "a bowl of lemons",
    "a fox in snow",
    "a tram in the rain",
    "a cactus in a clay pot",
    "a sailboat at dawn",
    "a stack of old books",
    "a hot-air balloon",
)


async def run_emulator(args: argparse.Namespace) -> int:
    """``emulator``: serve the emulator until interrupted, printing how to point at it."""
    from ..testing import Emulator

    emulator = Emulator(
        api_key=args.api_key,
        time_scale=args.time_scale,
        seed=args.seed,
        fail_rate=args.fail_rate,
        drop_rate=args.drop_rate,
        rate_limit=args.rate_limit,
        burst=args.burst,
        ignore_idempotency=args.ignore_idempotency,
        host=args.host,
        port=args.port,
        storage_port=args.storage_port,
        record_requests=False,
    )
    async with emulator:
        print(f"WorldRouter emulator at {emulator.base_url} (storage {emulator.storage_url})")
        print(f"export WORLDROUTER_BASE_URL={emulator.base_url} WORLDROUTER_API_KEY={args.api_key}")
        sys.stdout.flush()
        await asyncio.Event().wait()
    return EXIT_OK


async def run_demo(args: argparse.Namespace) -> int:
    """``demo``: write ``--count`` prompts and run them as a batch against an in-process
    emulator, into ``--out``."""
    from ..testing import Emulator

    if args.count < 1:
        raise UsageError(f"--count must be at least 1 (got {args.count})")
    await check_out_dir(args.out)
    prompts = args.out / "prompts.jsonl"
    models = ("gpt-image-2", "gemini-2.5-flash-image")
    with prompts.open("w", encoding="utf-8") as file:
        for i in range(args.count):
            subject = DEMO_SUBJECTS[i % len(DEMO_SUBJECTS)]
            record = {"id": f"demo-{i:04d}", "model": models[i % 2], "prompt": f"{subject}, #{i}"}
            file.write(json.dumps(record) + "\n")
    items, _ = read_jsonl(prompts)
    # 1/50 of real time: a 25 s generation takes half a second, so the bar has time to move.
    async with Emulator(time_scale=0.02, record_requests=False) as emulator:
        print(f"emulator at {emulator.base_url}; {args.count} prompts in {prompts}")
        async with Session(
            emulator.api_key,
            emulator.base_url,
            poll=PollPolicy(initial_delay=0.05, max_interval=0.2),
            retry=RetryPolicy(base=0.05, cap=1.0),
        ) as session:
            runner = await run_with_progress(
                session,
                items,
                total=len(items),
                out=args.out / "images",
                journal=args.out / "journal.sqlite3",
                concurrency=32,
                plain=args.plain,
            )
    report_stops(runner, resend_command=None)
    print(f"images in {args.out / 'images'}; look at them: {args.out / 'images' / 'index.html'}")
    return EXIT_OK if runner.summary.ok else EXIT_FAILED
