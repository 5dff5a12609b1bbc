"""Tracking a task created elsewhere: store the task ID, attach to it later by ID."""

import asyncio

import worldrouter_async as wr


async def main() -> None:
    async with wr.Session() as session:  # e.g. a web request handler
        task = await session.tasks.create("gpt-image-2", "a tram in the rain")
        task_id = task.id  # store it: a database row, a job queue message...

    async with wr.Session() as session:  # later, another process or after a restart
        result = await session.track(task_id, timeout=600)
        print(result.task_id, result.urls)


if __name__ == "__main__":
    asyncio.run(main())
