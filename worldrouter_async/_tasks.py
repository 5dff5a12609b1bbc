"""`Tasks`: a session's low-level task endpoints, one request each and no polling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._requests import build_request, check_task_id
from ._submit import Submitter
from .models import ImageTask


class Tasks:
    """Low-level task endpoints: one create or one retrieve, no polling.

    Reached as `Session.tasks`.
    """

    def __init__(
        self,
        submitter: Submitter,
        retrieve: Callable[[str], Awaitable[ImageTask]],
        check_open: Callable[[], None],
    ) -> None:
        self._submitter = submitter
        self._retrieve = retrieve
        self._check_open = check_open

    async def create(
        self, model: str, prompt: str, *, idempotency_key: str | None = None, **params: Any
    ) -> ImageTask:
        """Create one task (``POST /images/generation_tasks``) and return it as queued.

        Example:
            >>> task = await session.tasks.create("gpt-image-2", "a kite")  # doctest: +SKIP
        """
        request = build_request(model, prompt, params)
        return await self._submitter.create(request, idempotency_key=idempotency_key)

    async def retrieve(self, task_id: str) -> ImageTask:
        """Fetch a task's current state once, retrying transient failures."""
        self._check_open()
        return await self._retrieve(check_task_id(task_id))
