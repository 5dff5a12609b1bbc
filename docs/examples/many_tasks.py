"""Many tasks at once: one handle per request, in order, resolved by one poller."""

import asyncio

import worldrouter_async as wr


async def main() -> None:
    prompts = [f"a lighthouse, variation {i}" for i in range(20)]
    async with wr.Session(on_status=lambda c: print(c.task_id, c.old, "->", c.new)) as s:
        handles = await s.submit_many(
            [{"model": "gpt-image-2", "prompt": p} for p in prompts], concurrency=8
        )
        async for handle in s.as_completed(handles):
            error = handle.exception()
            print(handle.task_id, error or handle.result().urls)
        print(s.stats)


if __name__ == "__main__":
    asyncio.run(main())
