"""`Tasks` (``session.tasks``): the API's two task endpoints, called once each, no polling.

For callers that poll themselves or only need a task's state now; everything else goes
through `Session.submit`, which also tracks the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._requests import build_request, check_task_id
from .models import ImageTask

if TYPE_CHECKING:
    from ._session import Session


class Tasks:
    """Low-level task endpoints: one create or one retrieve, no polling."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def create(
        self, model: str, prompt: str, *, idempotency_key: str | None = None, **params: Any
    ) -> ImageTask:
        """Create one task (``POST /images/generation_tasks``) and return it as queued.

        Example:
            >>> task = await session.tasks.create("gpt-image-2", "a kite")  # doctest: +SKIP
        """
        request = build_request(model, prompt, params)
        return await self._session.create_task(request, idempotency_key=idempotency_key)

    async def retrieve(self, task_id: str) -> ImageTask:
        """Fetch a task's current state once, retrying transient failures."""
        self._session._check_open()
        return await self._session._api.retrieve(check_task_id(task_id))
