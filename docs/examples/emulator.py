"""The emulator on its own: a real server on loopback, with faults on demand."""

import asyncio

import worldrouter_async as wr
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator


async def main() -> None:
    async with Emulator() as emu:  # an API origin and a storage origin on 127.0.0.1
        await generate_with_faults(emu)


async def generate_with_faults(emu: Emulator) -> None:
    async with wr.Session(emu.api_key, emu.base_url, poll=FAST_POLL, retry=FAST_RETRY) as session:
        emu.inject("503", route="create", count=2)  # the next two creates answer 503
        emu.inject("429", route="poll", retry_after=0.05)  # the next poll is rate-limited
        result = await session.generate("gpt-image-2", "a lighthouse")
        print(result.urls[0].startswith(emu.storage_url))  # True

        try:
            await session.generate("gpt-image-2", "[fail:content_policy] a lighthouse")
        except wr.TaskFailedError as exc:
            print(exc.code)  # content_policy

        try:
            await session.generate("gpt-image-2", "[never] a lighthouse", timeout=0.2)
        except wr.TaskTimeoutError as exc:
            print("still running:", exc.task_id)

        print(emu.counters.as_dict())  # creates, polls, faults, storage requests...


if __name__ == "__main__":
    asyncio.run(main())
