"""Handling errors: what to catch, and how to retry a create that may have landed."""

import asyncio

import worldrouter_async as wr


async def create_once(session: wr.Session, prompt: str) -> wr.ImageTask:
    """Create a task; on an ambiguous failure retry with the same idempotency key."""
    key = "order-1234-image"  # one key per logical create, the same on every retry
    for _ in range(3):
        try:
            return await session.tasks.create("gpt-image-2", prompt, idempotency_key=key)
        except wr.AmbiguousCreateError as exc:
            print("may have landed, retrying with the same key:", exc.idempotency_key)
            await asyncio.sleep(1)
    raise RuntimeError("the API kept failing; the key can still be retried later")


async def main() -> None:
    async with wr.Session() as session:
        try:
            await session.submit("gpt-image-2", "a fox", response_format="b64_json")
        except wr.InvalidRequestError as exc:  # before any network call
            print("bad request:", exc)
        task = await create_once(session, "a fox in snow")
        try:
            result = await session.track(task.id, timeout=300)
            print(result.urls)
        except wr.TaskFailedError as exc:
            print("failed:", exc.task_id, exc.code, exc.message)
        except wr.TaskTimeoutError as exc:
            print("still running; track it again later:", exc.task_id)
        except wr.RateLimitError as exc:
            print("rate limited for too long; retry after", exc.retry_after)


if __name__ == "__main__":
    asyncio.run(main())
