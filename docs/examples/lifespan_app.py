"""A FastAPI-style app: the Session lives in the app's lifespan and is shared by handlers.

With FastAPI: ``app = FastAPI(lifespan=lifespan)`` and read ``request.app.state.session``.
The handler below is framework-free so the pattern is plain to see (and testable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import worldrouter_async as wr


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Open one Session at startup, close it (ending pending handles) at shutdown."""
    async with wr.Session() as session:
        app.state.session = session
        yield


async def create_image(app: Any, prompt: str) -> dict[str, Any]:
    """What a POST /images handler does: one generate call on the shared session."""
    try:
        result = await app.state.session.generate("gpt-image-2", prompt, timeout=120)
    except wr.TaskFailedError as exc:
        return {"status": 422, "error": exc.message, "task_id": exc.task_id}
    return {"status": 200, "task_id": result.task_id, "urls": list(result.urls)}


async def main() -> None:
    app = SimpleNamespace(state=SimpleNamespace())
    async with lifespan(app):
        print(await create_image(app, "a red kite over hills"))


if __name__ == "__main__":
    import asyncio

    asyncio.run(main())
