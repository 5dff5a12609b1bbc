"""What a poll's answer or failure means for a handle, and the errors that say so.

Pure functions the poller applies: a final answer becomes a result or a typed error
(a completed task without images is a `NoImagesError` that keeps the answer), a failed
poll is worth another try or not (a 404 gets `PollPolicy.not_found_grace` after the create),
and a handle that ends without a final answer (deadline, session close, the poller
stopping, an id no poll can name) gets an error that carries its `task_id`, the last status
and the last poll failure, and says how to wait again.
"""

from __future__ import annotations

from ._config import PollPolicy
from ._errors import (
    APIError,
    InvalidRequestError,
    NoImagesError,
    PollerFailedError,
    SessionClosedError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnpollableTaskIdError,
)
from ._handles import ImageResult, TaskHandle
from ._retries import is_transient
from .models import ImageRequest, ImageTask, TaskStatus


def completed(task: ImageTask, task_id: str) -> ImageResult | NoImagesError:
    """A completed task's result, or `NoImagesError` (keeping the answer) if it has no image."""
    if task.has_image:
        return ImageResult.from_task(task)
    return NoImagesError(task=task, task_id=task_id or task.id)


def failed(task: ImageTask, task_id: str) -> TaskFailedError:
    """The error of a task the server reports failed, with the server's reason if it gave one."""
    error = task.error
    return TaskFailedError(
        task_id=task_id or task.id,
        code=error.code if error else None,
        message=error.message if error else "the server gave no reason",
    )


def worth_another_poll(
    exc: APIError, *, policy: PollPolicy, fresh_since: float | None, now: float
) -> bool:
    """True for a transient failure, and for a 404 within `not_found_grace` of the
    create (a replica may not know a task it was just told about); False ends it."""
    if isinstance(exc, TaskNotFoundError):
        return fresh_since is not None and now < fresh_since + policy.not_found_grace
    return is_transient(exc)


def timeout_error(handle: TaskHandle, last_error: APIError | None) -> TaskTimeoutError:
    """The error of a handle whose deadline passed before a final answer."""
    task_id = handle.task_id or ""
    error = TaskTimeoutError(
        f"task {task_id} did not finish before its deadline (last status "
        f"{_last_status(handle)}{_last_failure(last_error)}); it may still "
        f"complete: Session.track({task_id!r}) to wait again",
        task_id=task_id,
    )
    error.__cause__ = last_error
    return error


def ending_error(
    handle: TaskHandle, last_error: APIError | None, failure: BaseException | None
) -> SessionClosedError:
    """The error of a handle still pending when the session closed, or, if `failure` is
    set, when the poller stopped on that internal error (`PollerFailedError`)."""
    task_id = handle.task_id or ""
    if failure is None:
        closed = SessionClosedError(
            f"the session closed while task {task_id} was pending{_last_failure(last_error)}; "
            "the task may still complete: track it from a new session with "
            f"Session.track({task_id!r})",
            task_id=task_id,
        )
        closed.__cause__ = last_error
        return closed
    error = PollerFailedError(
        f"the session's poller stopped on an internal error "
        f"({type(failure).__name__}: {failure}) while task {task_id} was "
        "pending; the task may still complete: track it from a new session with "
        f"Session.track({task_id!r})",
        task_id=task_id,
    )
    error.__cause__ = failure
    return error


def _last_status(handle: TaskHandle) -> str:
    """The last status seen, saying so when no docs name it, with its answer's request id."""
    status = handle.status
    task = handle.task
    text = repr(status)
    if status is not None and status not in TaskStatus.KNOWN:
        text += ", which the API documentation does not name: the server may have stopped it"
    if task is not None and task.request_id:
        text += f"; request_id={task.request_id!r}"
    return text


def _last_failure(error: APIError | None) -> str:
    """The message tail that says why the last poll failed, if it did."""
    return "" if error is None else f"; last poll failed: {type(error).__name__}: {error}"


def unpollable(
    task: ImageTask, request: ImageRequest | None, problem: InvalidRequestError
) -> TaskHandle:
    """The handle of a task just created under an id no poll can name (blank, ``.``,
    ``..``): it ends at once with `UnpollableTaskIdError`, which keeps the create's answer
    as the receipt."""
    task_id = task.task_id or task.id
    error = UnpollableTaskIdError(
        f"the create answered task id {task_id!r}, which no poll URL can name (ids must not "
        "be blank, '.' or '..'), so the task cannot be tracked. It was created and may be "
        f"billed (status {task.status!r}): quote the id and the request_id to support",
        task=task,
        status=200,
        request_id=task.request_id,
    )
    error.__cause__ = problem
    handle = TaskHandle(task_id, request=request, task=task)
    handle._settle_error(error)
    return handle
