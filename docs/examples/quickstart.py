"""The first image: submit, wait, save (the key and URL come from the environment)."""

import asyncio

import worldrouter_async as wr


async def main() -> None:
    async with wr.Session() as session:  # WORLDROUTER_API_KEY, WORLDROUTER_BASE_URL
        result = await session.generate("gpt-image-2", "a paper crane", size="1024x1024")
        print(result.task_id, result.urls, result.usage)
        for path in await session.download(result, "images/"):
            print("saved", path)


if __name__ == "__main__":
    asyncio.run(main())
