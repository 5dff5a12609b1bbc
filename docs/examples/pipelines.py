"""A pipeline: prompts arrive on a queue, at most 8 tasks run at once, images are saved as
each task finishes.

Run it: ``WORLDROUTER_API_KEY=... python docs/examples/pipelines.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import worldrouter_async as wr


async def produce(queue: asyncio.Queue[str | None]) -> None:
    """Stand-in for prompts arriving from users, a file or a message broker."""
    for i in range(30):
        await queue.put(f"a lighthouse at dusk, variation {i}")
    await queue.put(None)  # no more prompts


async def requests(queue: asyncio.Queue[str | None]) -> AsyncIterator[dict[str, Any]]:
    """The pipeline's input: one request per prompt, until the producer says it is done."""
    while (prompt := await queue.get()) is not None:
        yield {"model": "gpt-image-2", "prompt": prompt}


async def main() -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=4)
    async with wr.Session() as session, asyncio.TaskGroup() as producers:
        producers.create_task(produce(queue))
        async with session.pipeline(requests(queue), max_pending=8) as handles:
            async for handle in handles:
                if (error := handle.exception()) is not None:
                    print("failed:", error)
                    continue
                paths = await session.download(handle.result(), "images")
                print(handle.task_id, "->", *(str(path) for path in paths))
        print(session.stats)


if __name__ == "__main__":
    asyncio.run(main())
