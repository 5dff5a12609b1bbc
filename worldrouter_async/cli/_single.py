"""One task from the command line: `generate` creates it, `wait` tracks one created earlier.

Both save the task's images into ``--out``. `generate` checks that directory before it pays
for a task, and once a task exists every failure names it with the command that fetches it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio.to_thread

from .._errors import TaskFailedError, TaskNotFoundError, WorldRouterError
from .._handles import TaskHandle
from .._session import Session
from ._errors import EXIT_OK, PROG, UsageError, is_usage_error, one_line
from ._json import emit, task_record
from ._progress import task_status_line
from ._session_options import request_params, session_from_flags


def prepare_out_dir(path: Path) -> None:
    """Create `path` if missing and prove a file can be written there, or raise `UsageError`."""
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"--out {path} is a file, not a directory; pass a directory (it is created if missing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".worldrouter-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot write images to --out {path}: {exc.strerror or exc}; "
            "pass a directory you can write to"
        ) from exc


async def check_out_dir(path: Path) -> None:
    """`prepare_out_dir` off the event loop."""
    await anyio.to_thread.run_sync(prepare_out_dir, path)


def wait_command(task_id: str, out: Path) -> str:
    """The command line that fetches task `task_id` into `out` again."""
    return f"{PROG} wait {task_id} --out {out}"


async def save_images(
    session: Session, handle: TaskHandle, out: Path, *, heading: str, json_output: bool = False
) -> None:
    """Wait for `handle`, save its images into `out` and print their paths (or, with
    `json_output`, one `task_record`, also when it fails).

    On a terminal, stderr shows `heading` (naming the task) and a live status line while the
    task runs. If anything stops the wait after the task exists (a timeout, a download or disk
    failure, Ctrl-C), stderr names the task and the `wait` command that fetches it again, so
    the paid-for images are never lost with the error.
    """
    try:
        async with task_status_line(handle, heading=heading):
            result = await handle
        paths = await session.download(result, out)
    except (TaskFailedError, TaskNotFoundError) as exc:
        # The server failed the task or does not know it: there is nothing to fetch later.
        if json_output:
            emit(task_record(handle, error=one_line(exc)))
        raise
    except BaseException as exc:
        task_id = handle.task_id or ""
        print(
            f"{PROG}: task {task_id} is not saved; fetch its images later with: "
            f"{wait_command(task_id, out)}",
            file=sys.stderr,
        )
        if json_output:
            emit(task_record(handle, error=one_line(exc)))
        raise
    if json_output:
        emit(task_record(handle, result=result, files=paths))
        return
    for path in paths:
        print(path)


async def run_generate(args: argparse.Namespace) -> int:
    """``generate``: create one task from the prompt and save its images."""
    await check_out_dir(args.out)  # before the create: a task is paid for once it exists
    async with session_from_flags(args) as session:
        try:
            handle = await session.submit(prompt=args.prompt, **request_params(args))
        except WorldRouterError as exc:  # refused or unanswered: no task exists
            if args.json and not is_usage_error(exc):
                emit(task_record(None, error=one_line(exc)))
            raise
        heading = (
            f"task {handle.task_id} created; if this stops, fetch it with: "
            f"{wait_command(handle.task_id or '', args.out)}"
        )
        await save_images(session, handle, args.out, heading=heading, json_output=args.json)
    return EXIT_OK


async def run_wait(args: argparse.Namespace) -> int:
    """``wait``: track a task created earlier and save its images."""
    await check_out_dir(args.out)
    async with session_from_flags(args) as session:
        handle = session.track(args.task_id)
        heading = f"waiting for task {args.task_id}"
        await save_images(session, handle, args.out, heading=heading, json_output=args.json)
    return EXIT_OK
