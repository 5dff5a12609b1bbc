"""One Session shared by every request handler of an aiohttp.web app.

The session opens with the app (``cleanup_ctx``) and closes with it; its single poller
serves every concurrent request, however many are waiting on images. ``GET /events``
forwards every status change to browsers as server-sent events.

Run it: ``WORLDROUTER_API_KEY=... python docs/examples/aiohttp_app.py``, then
``curl -N localhost:8000/events`` in one terminal and
``curl -X POST localhost:8000/images -d '{"prompt": "a red kite"}'`` in another.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import worldrouter_async as wr

SESSION = web.AppKey("worldrouter_session", wr.Session)
SESSION_OPTIONS = web.AppKey("worldrouter_session_options", dict[str, Any])
EVENT_STREAMS = web.AppKey("worldrouter_event_streams", set[wr.StatusStream])


async def worldrouter_session(app: web.Application) -> AsyncIterator[None]:
    """Open the shared Session on startup and close it on cleanup."""
    async with wr.Session(**app.get(SESSION_OPTIONS, {})) as session:
        app[SESSION] = session
        yield


async def create_image(request: web.Request) -> web.Response:
    """POST /images {"prompt": ..., "model": ...}: wait for the task, answer its URLs."""
    body = await request.json()
    session = request.app[SESSION]
    try:
        result = await session.generate(
            body.get("model", "gpt-image-2"), body.get("prompt", ""), timeout=120
        )
    except wr.InvalidRequestError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except wr.TaskFailedError as exc:
        return web.json_response({"error": exc.message, "task_id": exc.task_id}, status=422)
    except wr.TaskTimeoutError as exc:
        return web.json_response({"task_id": exc.task_id, "status": "pending"}, status=202)
    return web.json_response({"task_id": result.task_id, "urls": list(result.urls)})


async def image_status(request: web.Request) -> web.Response:
    """GET /images/{task_id}: the task's current state, straight from the API."""
    task = await request.app[SESSION].tasks.retrieve(request.match_info["task_id"])
    return web.json_response({"task_id": task.id, "status": task.status, "urls": list(task.urls)})


# --8<-- [start:events]
async def status_events(request: web.Request) -> web.StreamResponse:
    """GET /events: every task status change, as server-sent events for an EventSource."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    streams = request.app[EVENT_STREAMS]
    async with request.app[SESSION].status_changes() as changes:
        streams.add(changes)
        try:
            async for change in changes:
                await response.write(server_sent_event(change))
        except ConnectionResetError:
            pass  # the browser left; noticed at the first write after it did
        finally:
            streams.discard(changes)
    return response


def server_sent_event(change: wr.StatusChange) -> bytes:
    """One change as an SSE ``status`` event whose data is a JSON object."""
    data: dict[str, Any] = {
        "task_id": change.task_id,
        "previous": change.old,
        "status": change.new,
        "final": change.final,
    }
    if change.final and change.handle.exception() is None:
        data["urls"] = list(change.handle.result().urls)
    return f"event: status\ndata: {json.dumps(data)}\n\n".encode()


async def end_event_streams(app: web.Application) -> None:
    """On shutdown, end the open event streams so their handlers return at once."""
    for changes in app[EVENT_STREAMS].copy():
        await changes.aclose()


# --8<-- [end:events]
def create_app(**session_options: Any) -> web.Application:
    """The app; `session_options` are passed to `Session` (key and URL default to env)."""
    app = web.Application()
    app[SESSION_OPTIONS] = session_options
    app[EVENT_STREAMS] = set()
    app.cleanup_ctx.append(worldrouter_session)
    app.on_shutdown.append(end_event_streams)
    app.router.add_post("/images", create_image)
    app.router.add_get("/images/{task_id}", image_status)
    app.router.add_get("/events", status_events)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), port=8000)
