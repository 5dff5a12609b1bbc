"""The emulator's tasks: what a create asks for, how long a task takes, and how it reads.

A task's status is a function of the clock (queued until ``started_at``, in progress until
``finishes_at``); a ``[fail:code]`` or ``[never]`` marker in the prompt decides its outcome.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final, Literal

from attrs import define

from ..._support import GEMINI_MODELS

#: Median seconds of real generation per model (queue, run); scaled by ``time_scale``.
MODEL_TIMINGS: Final[dict[str, tuple[float, float]]] = {
    "gpt-image-2": (1.0, 25.0),
    "gemini-2.5-flash-image": (0.5, 8.0),
    "gemini-3-pro-image-preview": (1.0, 20.0),
    "gemini-3.1-flash-image-preview": (0.5, 10.0),
}
_DEFAULT_TIMING: Final = (1.0, 15.0)
_MARKER_RE: Final = re.compile(r"\[(fail|never)(?::([a-z_]+))?\]")
_SIZE_RE: Final = re.compile(r"^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$")
_OUTPUT_FORMATS: Final = frozenset({"png", "jpeg", "jpg", "webp"})
#: The longest side of an emulator image: the requested size scaled down to fit, so a
#: contact sheet shows the aspect ratio asked for while benchmarks stay fast.
MAX_IMAGE_SIDE: Final = 256


@define
class EmulatedTask:
    """One task's server-side record; its status is a function of the clock."""

    id: str
    model: str
    prompt: str
    n: int
    params: dict[str, Any]
    created: float
    started_at: float
    finishes_at: float
    outcome: Literal["completed", "failed", "never"]
    error_code: str = "generation_failed"
    forced_status: str | None = None

    def status(self, now: float) -> str:
        """The status at monotonic time `now`."""
        if self.forced_status is not None:
            return self.forced_status
        if now < self.started_at:
            return "queued"
        if self.outcome == "never" or now < self.finishes_at:
            return "in_progress"
        return self.outcome


def validate_create(body: dict[str, Any], models: frozenset[str]) -> tuple[str, str] | None:
    """The (code, message) of the first problem with a create body, or None if it is valid."""
    for name in ("model", "prompt"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            return "missing_required_parameter", f"'{name}' is required"
    if body["model"] not in models:
        return "model_not_found", f"The model '{body['model']}' is not an async image model"
    if body.get("response_format", "url") != "url":
        return "invalid_value", "response_format must be 'url' for async image tasks"
    if "output_format" in body and body["output_format"] not in _OUTPUT_FORMATS:
        return "invalid_value", f"Invalid output_format '{body['output_format']}'"
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return "invalid_value", f"n must be a positive integer, got {n!r}"
    size = body.get("size")
    if (
        body["model"] not in GEMINI_MODELS
        and size is not None
        and size != "auto"
        and not (isinstance(size, str) and _SIZE_RE.match(size))
    ):
        return "invalid_value", f"Invalid size '{size}'"
    return None


def new_task(
    body: dict[str, Any], *, now: float, rng: random.Random, time_scale: float, n_cap: int
) -> EmulatedTask:
    """A task for a valid create `body` made at `now`, its durations drawn from `rng`."""
    model, prompt = body["model"], body["prompt"]
    gemini = model in GEMINI_MODELS
    params = {k: v for k, v in body.items() if k not in ("model", "prompt")}
    if gemini:  # Gemini decides the count and the size itself
        params.pop("size", None)
    n = 1 if gemini else min(int(body.get("n", 1)), n_cap)
    queue_s, run_s = MODEL_TIMINGS.get(model, _DEFAULT_TIMING)
    started = now + rng.uniform(0.5, 1.5) * queue_s * time_scale
    finishes = started + rng.lognormvariate(math.log(run_s), 0.3) * time_scale
    marker = _MARKER_RE.search(prompt)
    outcome: Literal["completed", "failed", "never"] = "completed"
    code = "generation_failed"
    if marker:
        outcome = "failed" if marker.group(1) == "fail" else "never"
        code = marker.group(2) or code
    return EmulatedTask(
        id=f"imgtask_{uuid.uuid4().hex}",
        model=model,
        prompt=prompt,
        n=n,
        params=params,
        created=time.time(),
        started_at=started,
        finishes_at=finishes,
        outcome=outcome,
        error_code=code,
    )


def task_body(
    task: EmulatedTask, *, status: str, storage_url: str, url_generation: int
) -> dict[str, Any]:
    """The documented JSON of `task` in `status`, with image URLs of `url_generation`."""
    body: dict[str, Any] = {
        "id": task.id,
        "object": "image.generation_task",
        "created": int(task.created),
        "task_id": task.id,
        "status": status,
        "model": task.model,
        "created_at": datetime.fromtimestamp(task.created, UTC).isoformat(),
    }
    if status == "completed":
        signed = f"?v={url_generation}" if url_generation else ""
        body["data"] = [
            {"url": f"{storage_url}/images/{task.id}/{i}.png{signed}"} for i in range(task.n)
        ]
        words = len(task.prompt.split())
        body["usage"] = {
            "input_tokens": words,
            "output_tokens": 100 * task.n,
            "total_tokens": words + 100 * task.n,
        }
    elif status == "failed":
        body["error"] = {
            "code": task.error_code,
            "message": f"The image could not be generated ({task.error_code}).",
        }
    return body


def image_size(task: EmulatedTask) -> tuple[int, int]:
    """The task's requested ``WIDTHxHEIGHT`` scaled to fit `MAX_IMAGE_SIDE` (square if none)."""
    size = task.params.get("size")
    if not isinstance(size, str) or not _SIZE_RE.match(size):
        return MAX_IMAGE_SIDE, MAX_IMAGE_SIDE
    width, height = (int(side) for side in size.split("x"))
    scale = min(1.0, MAX_IMAGE_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
