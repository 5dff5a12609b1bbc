"""Never run: type-checked by mypy --strict to pin how the public API reads to users."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import assert_type

import worldrouter_async as wr
from worldrouter_async.batch import BatchRunner, BatchSummary, Outcome


async def usage() -> None:
    async with wr.Session("key", poll=wr.PollPolicy(max_interval=5.0)) as session:
        task = await session.tasks.create("gpt-image-2", "a star", size="1024x1024")
        assert_type(task, wr.ImageTask)
        handle = await session.submit("gpt-image-2", "a star", timeout=60.0)
        assert_type(handle, wr.TaskHandle)
        assert_type(handle.task_id, str | None)
        result = await handle
        assert_type(result, wr.ImageResult)
        assert_type(result.urls, tuple[str, ...])
        handles = await session.submit_many([wr.ImageRequest(model="m", prompt="p")])
        assert_type(handles, list[wr.TaskHandle])
        async for done in session.as_completed(handles):
            assert_type(done, wr.TaskHandle)
        paths = await session.download(result, Path("out"))
        assert_type(paths, tuple[Path, ...])
        assert_type(session.stats, wr.SessionStats)
        async with BatchRunner(session, "job.sqlite3") as runner:
            async for outcome in runner.run([wr.ImageRequest(model="m", prompt="p")]):
                assert_type(outcome, Outcome)
        assert_type(runner.summary, BatchSummary)


async def networks() -> None:
    context = ssl.create_default_context()
    async with wr.Session(
        "key",
        proxy="http://user:pass@proxy.example:3128",
        trust_env=False,
        verify=context,
        timeouts=wr.Timeouts(request=20.0),
        limits=wr.Limits(max_response_bytes=1 << 20),
    ):
        pass
    async with wr.Session("key", verify=Path("ca.pem")), wr.Session("key", verify="ca.pem"):
        pass
    try:
        pass
    except wr.TLSVerificationError as exc:
        assert_type(exc, wr.TLSVerificationError)
    except wr.ProxyError as exc:
        assert_type(exc.status, int | None)
