"""Asyncio-native SDK for WorldRouter's async image-generation tasks.

Example:
    >>> import worldrouter_async
    >>> async def main():  # doctest: +SKIP
    ...     async with worldrouter_async.Session() as session:
    ...         result = await session.generate("gpt-image-2", "a paper crane")
    ...         print(result.urls)
"""

# First, before the slow imports below: in the CLI's own process, Ctrl-C is one line.
from . import _startup  # noqa: F401 - imported for that effect
from ._clock import Clock
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts
from ._creates import AbandonedTask
from ._errors import (
    AmbiguousCreateError,
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    CreateHeldBackError,
    DownloadError,
    IgnoredParameterError,
    IgnoredParameterWarning,
    InsecureConnectionWarning,
    InvalidRequestError,
    NoImagesError,
    NotFoundError,
    PermissionDeniedError,
    PollerFailedError,
    ProxyError,
    RateLimitError,
    ServerError,
    SessionClosedError,
    TaskAbandonedError,
    TaskCancelledError,
    TaskFailedError,
    TaskMismatchError,
    TaskNotFoundError,
    TaskTimeoutError,
    TLSVerificationError,
    UnpollableTaskIdError,
    WorldRouterError,
    WrongEventLoopError,
)
from ._events import LocalStatus, StatusChange, StatusListener, StatusStream
from ._handles import ImageResult, TaskHandle, as_completed
from ._hooks import (
    BreakerClosed,
    BreakerOpened,
    BreakerProbeSent,
    Event,
    Observer,
    RateLimitPaused,
    RequestAnswered,
    RequestFailed,
    RetryScheduled,
    TaskCreated,
    TaskEnded,
    TaskResolved,
    TaskStatusChanged,
    TaskTracked,
    TaskUntracked,
)
from ._images import ImageBytes
from ._pipeline import Pipeline
from ._session import Session
from ._stats import SessionStats
from ._support import SUPPORTED_MODELS, ignored_parameters
from ._task_endpoints import Tasks
from ._transports.base import AsyncTransport, WireRequest, WireResponse
from ._version import __version__
from .models import ImageData, ImageRequest, ImageTask, TaskError, TaskStatus, Usage

__all__ = [
    "SUPPORTED_MODELS",
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AbandonedTask",
    "AmbiguousCreateError",
    "AsyncTransport",
    "AuthenticationError",
    "BadRequestError",
    "BreakerClosed",
    "BreakerOpened",
    "BreakerProbeSent",
    "Clock",
    "ConfigurationError",
    "CreateHeldBackError",
    "DownloadError",
    "Event",
    "IgnoredParameterError",
    "IgnoredParameterWarning",
    "ImageBytes",
    "ImageData",
    "ImageRequest",
    "ImageResult",
    "ImageTask",
    "InsecureConnectionWarning",
    "InvalidRequestError",
    "Limits",
    "LocalStatus",
    "NoImagesError",
    "NotFoundError",
    "Observer",
    "PermissionDeniedError",
    "Pipeline",
    "PollPolicy",
    "PollerFailedError",
    "ProxyError",
    "RateLimitError",
    "RateLimitPaused",
    "RequestAnswered",
    "RequestFailed",
    "RetryPolicy",
    "RetryScheduled",
    "ServerError",
    "Session",
    "SessionClosedError",
    "SessionStats",
    "StatusChange",
    "StatusListener",
    "StatusStream",
    "TLSVerificationError",
    "TaskAbandonedError",
    "TaskCancelledError",
    "TaskCreated",
    "TaskEnded",
    "TaskError",
    "TaskFailedError",
    "TaskHandle",
    "TaskMismatchError",
    "TaskNotFoundError",
    "TaskResolved",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskTimeoutError",
    "TaskTracked",
    "TaskUntracked",
    "Tasks",
    "Timeouts",
    "UnpollableTaskIdError",
    "Usage",
    "WireRequest",
    "WireResponse",
    "WorldRouterError",
    "WrongEventLoopError",
    "__version__",
    "as_completed",
    "ignored_parameters",
]

# Public classes report the package as their home, so reprs and docs show the public path.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("worldrouter_async._"):
        _obj.__module__ = __name__
del _name, _obj
