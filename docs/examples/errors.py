"""Handling errors: what to catch, and what to do with a create that may have landed."""

import asyncio

import worldrouter_async as wr


async def create_once(session: wr.Session, prompt: str) -> wr.ImageTask | None:
    """Create a task; on an ambiguous failure keep its key instead of paying twice."""
    key = "order-1234-image"  # one key per logical create; store it before you send
    try:
        return await session.tasks.create("gpt-image-2", prompt, idempotency_key=key)
    except wr.AmbiguousCreateError as exc:
        # Resending with this key is safe only if your deployment deduplicates creates by
        # Idempotency-Key; if it does, open the session with retry_ambiguous_creates=True.
        print("may have been created; not resent automatically:", exc.idempotency_key)
        return None


async def main() -> None:
    async with wr.Session() as session:
        try:
            await session.submit("gpt-image-2", "a fox", response_format="b64_json")
        except wr.InvalidRequestError as exc:  # before any network call
            print("bad request:", exc)
        task = await create_once(session, "a fox in snow")
        if task is None:
            return
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
