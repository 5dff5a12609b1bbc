"""Downloading images: atomic files named after the task, no credentials sent to storage."""

import asyncio

import worldrouter_async as wr


async def main() -> None:
    limits = wr.Limits(max_concurrent_downloads=4, max_download_bytes=20 * 1024 * 1024)
    async with wr.Session(limits=limits, timeouts=wr.Timeouts(download=60)) as session:
        result = await session.generate("gpt-image-2", "a bowl of lemons", n=2)
        paths = await session.download(result, "images/")  # images/<task_id>-0.png, -1.png
        print(paths)
        (single,) = await session.download(result.urls[0], "images/lemons.png")
        print(single)
        for image in await session.read(result):  # the bytes in memory, checked the same way
            print(image.content_type, len(image.data), image.extension)


if __name__ == "__main__":
    asyncio.run(main())
