"""Model parameter support: Gemini ignores size and n, and the SDK says so before sending."""

import asyncio
import warnings

import worldrouter_async as wr


async def main() -> None:
    request = wr.ImageRequest(model="gemini-2.5-flash-image", prompt="a cactus", size="512x512")
    print("ignored:", wr.ignored_parameters(request))  # ('size',)
    async with wr.Session() as session:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await session.submit_request(request)
        print(caught[0].category.__name__, caught[0].message)
    async with wr.Session(strict=True) as strict:
        try:
            await strict.submit_request(request)
        except wr.IgnoredParameterError as exc:
            print("strict:", exc)


if __name__ == "__main__":
    asyncio.run(main())
