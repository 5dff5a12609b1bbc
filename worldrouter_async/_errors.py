"""The exceptions worldrouter_async raises, all rooted at `WorldRouterError`.

```
* WorldRouterError
  + ConfigurationError (ValueError)         bad API key, base URL or session option
  + InvalidRequestError (ValueError)        a request rejected before any network call
    + IgnoredParameterError                 strict mode: the model would ignore a parameter
  + APIError                                something went wrong talking to the API
    + APIStatusError                        the API answered with an error status
      + BadRequestError                     400, 422
      + AuthenticationError                 401
      + PermissionDeniedError               403
      + NotFoundError                       404
        + TaskNotFoundError                 404 for a task being polled
      + RateLimitError                      429, with retry_after
      + ServerError                         5xx
    + APIResponseError                      a success answer we cannot read or believe
      + TaskMismatchError                   a poll answered about another task (polled again)
      + UnpollableTaskIdError               a create answered a task id no poll can name
    + APIConnectionError (OSError)          the connection failed or dropped
      + APITimeoutError (TimeoutError)      connect, read or whole-request timeout
      + TLSVerificationError                the server's certificate is not trusted
      + ProxyError                          the proxy was unreachable or refused the tunnel
    + AmbiguousCreateError                  a create may or may not have reached the server
  + CreateHeldBackError                     not sent: the server refused its model or URL before
    + DownloadError                         a stored image could not be fetched or saved
  + TaskFailedError                         the task ended with status "failed"
    + NoImagesError                         "completed" without any image: paid, nothing to show
  + TaskTimeoutError (TimeoutError)         the handle's deadline passed first
  + TaskCancelledError                      tracking was stopped with handle.cancel()
    + TaskAbandonedError                    its caller was cancelled before it got the handle
  + SessionClosedError                      the session closed while the task was pending
    + PollerFailedError                     the session's poller stopped on an internal error
  + WrongEventLoopError (RuntimeError)      the session was used from another event loop
```

Every error about one task carries its `task_id`. `TLSVerificationError`, a `ProxyError`
other than a proxy's 5xx, 401 and 403 are never retried: no retry can fix them.

`InsecureConnectionWarning` (a `UserWarning`) is emitted when certificate verification is
turned off with ``verify=False``.
"""

from __future__ import annotations

import asyncio
from typing import Any


class WorldRouterError(Exception):
    """Base class of every exception this SDK raises."""


class ConfigurationError(WorldRouterError, ValueError):
    """A session option is missing or unsafe (API key, base URL, policies)."""


class InvalidRequestError(WorldRouterError, ValueError):
    """A request failed validation, so nothing was sent."""


# Imported here, once `InvalidRequestError` (all models needs from this module) exists, so
# the `ImageTask` annotations below resolve at runtime (typing.get_type_hints) without a cycle.
from .models import ImageTask  # noqa: E402


class IgnoredParameterError(InvalidRequestError):
    """With ``strict=True``, a parameter the chosen model silently ignores."""


class IgnoredParameterWarning(UserWarning):
    """A parameter the chosen model accepts but silently ignores (the API never errors)."""


class InsecureConnectionWarning(UserWarning):
    """Certificate verification is off (``verify=False``): anyone on the path can read the key."""


class APIError(WorldRouterError):
    """Base class of failures while talking to the API."""


class APIStatusError(APIError):
    """The API answered with an HTTP error status.

    `message` and `code` come from the server's ``{"error": {...}}`` body when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        #: The server's Retry-After hint in seconds, when it sent one.
        self.retry_after = retry_after

    @property
    def status_code(self) -> int:
        """The HTTP status, under the name openai-python and httpx use; same as `status`."""
        return self.status

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self.code:
            parts.append(f"code={self.code!r}")
        if self.request_id:
            parts.append(f"request_id={self.request_id!r}")
        return f"{self.message} ({', '.join(parts)})"


class BadRequestError(APIStatusError):
    """400 or 422: the server rejected the request's parameters."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or endpoint."""


class NotFoundError(APIStatusError):
    """404: the resource does not exist."""


class TaskNotFoundError(NotFoundError):
    """404 while polling: the task ID is unknown or has expired on the server."""

    def __init__(self, message: str, *, task_id: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.task_id = task_id


class RateLimitError(APIStatusError):
    """429: too many requests; `retry_after` holds the server's hint in seconds, if any."""


class ServerError(APIStatusError):
    """5xx: the server failed; GETs are retried, creates only on 503."""


class APIResponseError(APIError):
    """A success status whose body is empty, not JSON, not the documented shape, or breaks
    a promise (an answer about another task); such answers are never believed.

    `request_id` is the answer's ``x-request-id`` header, when it sent one.
    """

    def __init__(self, message: str, *, status: int, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        if self.request_id is None:
            return self.message
        return f"{self.message} (request_id={self.request_id!r})"


class TaskMismatchError(APIResponseError):
    """A poll of `task_id` answered about `answered_id`: a gateway or replica mix-up.

    The answer is not believed (its images belong to someone else's task); the task is
    polled again until its deadline, since the next answer may well be the right one.
    """

    def __init__(self, message: str, *, task_id: str, answered_id: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.task_id = task_id
        self.answered_id = answered_id


class UnpollableTaskIdError(APIResponseError):
    """A create answered a task id that no poll URL can name (blank, ``.`` or ``..``).

    The task was created and may be billed: `task` is the create's answer, the receipt to
    quote to support together with `request_id`.
    """

    def __init__(self, message: str, *, task: ImageTask, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.task = task
        self.task_id = task.id


class APIConnectionError(APIError, OSError):
    """The connection could not be made, or broke before a full answer arrived."""

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        #: False only when the request certainly never left this process.
        self.request_sent = request_sent

    def __str__(self) -> str:
        return str(self.args[0])


class APITimeoutError(APIConnectionError, TimeoutError):
    """Connecting or reading took longer than the configured `Timeouts`."""


class TLSVerificationError(APIConnectionError):
    """The server's TLS certificate could not be verified against the trusted CAs.

    Behind a TLS-inspecting proxy or with a private CA, pass ``verify="/path/to/ca.pem"``
    (CLI: ``--ca-bundle``) or set ``SSL_CERT_FILE``; retrying cannot help.
    """


class ProxyError(APIConnectionError):
    """The proxy could not be reached, or refused to open the tunnel.

    `status` is the proxy's HTTP status (407: proxy authentication required), or None when
    the proxy could not be reached at all. The proxy's credentials are never in the message.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, request_sent=False)
        self.status = status


class AmbiguousCreateError(APIError):
    """A create failed after the request may have reached the server.

    The task may exist and be billed. Resending it with the same `idempotency_key` is safe
    only if your deployment deduplicates creates by Idempotency-Key (the API documentation
    does not promise it); otherwise a resend may create and bill a second task.
    """

    def __init__(self, message: str, *, idempotency_key: str) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class DownloadError(APIError):
    """A stored image could not be downloaded; `status` is the storage's HTTP status, if any.

    The URL in the message has its query string removed, since signed URLs carry tokens.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class _TaskErrorMixin(WorldRouterError):
    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskFailedError(_TaskErrorMixin):
    """The server reported the task as failed; `code` and `message` are its error object."""

    def __init__(self, *, task_id: str, code: str | None, message: str) -> None:
        text = f"task {task_id} failed: {message}" + (f" (code={code!r})" if code else "")
        super().__init__(text, task_id=task_id)
        self.code = code
        self.message = message


class NoImagesError(TaskFailedError):
    """The server reported the task ``completed``, but its answer carries no image.

    The task is done and may be billed (`usage`), yet there is nothing to show: the SDK
    ends it like a failed task rather than report a result without images. `task` is the
    answer as read; quote `task_id` and `request_id` to support.
    """

    def __init__(self, *, task: ImageTask, task_id: str) -> None:
        message = _no_images_message(task)
        _TaskErrorMixin.__init__(self, f"task {task_id} {message}", task_id=task_id)
        self.code = None
        self.message = message
        self.task = task
        self.usage = task.usage
        self.request_id = task.request_id


def _no_images_message(task: ImageTask) -> str:
    """What the completed answer lacked, its usage and request id, and what to do."""
    found = f"{len(task.data)} item(s), none with a url or b64_json" if task.data else "no 'data'"
    receipt = [f"usage {task.usage.total_tokens} tokens"] if task.usage is not None else []
    if task.request_id:
        receipt.append(f"request_id={task.request_id!r}")
    paid = f" ({', '.join(receipt)})" if receipt else ""
    return (
        f"completed without any image: its answer carries {found}{paid}. The task may "
        "be billed: quote its id to support. Creating the request again creates (and "
        "bills) a new task"
    )


class TaskTimeoutError(_TaskErrorMixin, TimeoutError):
    """The handle's deadline passed; the task may still finish, so `session.track` it again."""


class TaskCancelledError(_TaskErrorMixin):
    """Tracking of this task was stopped locally; the task itself may still run server-side."""


class SessionClosedError(_TaskErrorMixin):
    """The session closed before the task finished; track it again from a new session."""


class PollerFailedError(SessionClosedError):
    """The session's poller stopped on an internal error, so it ended every pending handle.

    It is a `SessionClosedError`: the tasks may still complete, so track them again from a
    new session. `__cause__` is the error that stopped the poller.
    """


class TaskAbandonedError(TaskCancelledError):
    """The caller that created this task was cancelled (or left a pipeline) before it got
    the handle, so tracking stopped; the task is listed in `Session.abandoned`."""


class WrongEventLoopError(WorldRouterError, RuntimeError):
    """The session was used from an event loop other than the one it was opened on.

    A session's connections and poller belong to one loop; open a `Session` per event loop
    (per thread), inside that loop.
    """


class CreateHeldBackError(WorldRouterError):
    """A create that was not sent: the server had refused an earlier create of the session
    for a reason this one shares (its model, or the base URL while no create had worked).

    Nothing was created. `refusal` is the earlier refusal; fix its cause and submit the
    request again.
    """

    def __init__(self, message: str, *, refusal: APIStatusError) -> None:
        super().__init__(message)
        self.refusal = refusal


def first_leaf(error: BaseException) -> BaseException:
    """The first exception inside (nested) groups that is not a cancellation, else `error`."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    for inner in error.exceptions:
        leaf = first_leaf(inner)
        if not isinstance(leaf, asyncio.CancelledError | BaseExceptionGroup):
            return leaf
    return error
