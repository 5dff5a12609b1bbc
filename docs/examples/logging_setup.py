"""Seeing every request: the SDK logs to the standard `logging` tree under worldrouter_async."""

import asyncio
import logging

import worldrouter_async as wr


async def main() -> None:
    # Or, without any code: WORLDROUTER_LOG=debug python app.py
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("worldrouter_async").setLevel(logging.DEBUG)
    async with wr.Session() as session:
        task = await session.tasks.create("gpt-image-2", "a paper crane")
        print(task.id, (await session.tasks.retrieve(task.id)).status)


if __name__ == "__main__":
    asyncio.run(main())
