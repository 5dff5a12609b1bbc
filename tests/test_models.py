"""Wire models: validation before any network call, forward-compatible parsing, round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worldrouter_async import (
    ImageData,
    ImageRequest,
    ImageTask,
    InvalidRequestError,
    Session,
    TaskStatus,
    Usage,
)
from worldrouter_async.models import converter

DOC_COMPLETED: dict[str, Any] = {
    "id": "imgtask_1",
    "object": "image.generation_task",
    "created": 1780501937,
    "task_id": "imgtask_1",
    "status": "completed",
    "model": "gpt-image-2",
    "created_at": "2026-06-11T12:00:00+00:00",
    "data": [{"url": "https://storage.example/a.png"}],
    "usage": {"input_tokens": 20, "output_tokens": 397, "total_tokens": 417},
}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": ""}, "model must be a non-empty string (got '')"),
        ({"prompt": "  "}, "prompt must be a non-empty string (got '  ')"),
        (
            {"response_format": "b64_json"},
            "response_format must be 'url' for async tasks (got 'b64_json')",
        ),
        ({"output_format": "gif"}, "output_format must be one of png, jpeg, jpg, webp (got 'gif')"),
        ({"n": 0}, "n must be a positive integer (got 0)"),
        ({"n": True}, "n must be a positive integer (got True)"),
        ({"n": "2"}, "n must be a positive integer (got '2')"),
        (
            {"size": "1024*1024"},
            "size must be 'WIDTHxHEIGHT' such as '1024x1024', or 'auto' (got '1024*1024')",
        ),
        ({"size": "0x10"}, "got '0x10'"),
        (
            {"output_compression": 101},
            "output_compression must be an integer from 0 to 100 (got 101)",
        ),
        ({"extra": {"size": "1x1"}}, "extra must not repeat the known parameter 'size'"),
    ],
)
def test_invalid_values_name_the_value_and_the_fix(params: dict[str, Any], message: str) -> None:
    """Each bad value raises InvalidRequestError (a ValueError) naming the value."""
    fields = {"model": "gpt-image-2", "prompt": "a star", **params}
    with pytest.raises(InvalidRequestError, match=None) as caught:
        ImageRequest(**fields)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


def test_payload_drops_unset_fields_and_merges_extra() -> None:
    """Only set fields are sent; extra parameters pass through verbatim."""
    request = ImageRequest(
        model="gpt-image-2", prompt="a star", size="auto", n=2, extra={"seed": 7}
    )
    assert request.to_payload() == {
        "model": "gpt-image-2",
        "prompt": "a star",
        "n": 2,
        "size": "auto",
        "seed": 7,
    }


def test_unknown_mapping_keys_are_refused_with_a_hint() -> None:
    """A typo in a request mapping fails before the network, pointing at extra=."""
    with pytest.raises(
        InvalidRequestError, match=r"unknown request parameter\(s\) 'qualty'.*extra="
    ):
        converter.structure({"model": "m", "prompt": "p", "qualty": "high"}, ImageRequest)


def test_mapping_without_prompt_is_refused() -> None:
    """A mapping must carry model and prompt."""
    with pytest.raises(InvalidRequestError, match="a request needs 'prompt'"):
        converter.structure({"model": "m"}, ImageRequest)


def test_documented_completed_task_parses() -> None:
    """The documented completed body gives URLs, usage and an aware datetime."""
    task = converter.structure(DOC_COMPLETED, ImageTask)
    assert task.is_terminal
    assert task.urls == ("https://storage.example/a.png",)
    assert task.usage == Usage(20, 397, 417)
    assert task.created_at == datetime(2026, 6, 11, 12, tzinfo=UTC)


def test_forward_compatible_parsing() -> None:
    """Unknown fields are ignored, unknown statuses kept, missing optionals fine, nulls ok."""
    body = {"task_id": "imgtask_2", "status": "upscaling", "shiny_new": {"x": 1}, "data": None}
    task = converter.structure(body, ImageTask)
    assert task.id == "imgtask_2"
    assert task.status == "upscaling"
    assert not task.is_terminal
    assert task.data == ()


def test_naive_created_at_is_read_as_utc() -> None:
    """A timestamp without an offset is taken as UTC, so created_at is always aware."""
    task = converter.structure(
        {"id": "t", "status": "queued", "created_at": "2026-06-11T12:00:00"}, ImageTask
    )
    assert task.created_at is not None
    assert task.created_at.tzinfo is UTC


def test_usage_adds_up() -> None:
    """Usage values sum field by field (used for session totals)."""
    assert Usage(1, 2, 3) + Usage(10, 20, 30) == Usage(11, 22, 33)


_text = st.text(min_size=1).filter(lambda s: s.strip() != "")
_opt = st.none() | st.text()
_requests = st.builds(
    ImageRequest,
    model=_text,
    prompt=_text,
    n=st.none() | st.integers(min_value=1, max_value=10),
    size=st.none()
    | st.just("auto")
    | st.builds("{}x{}".format, st.integers(1, 4096), st.integers(1, 4096)),
    quality=_opt,
    output_format=st.none() | st.sampled_from(["png", "jpeg", "jpg", "webp"]),
    response_format=st.none() | st.just("url"),
    user=_opt,
    output_compression=st.none() | st.integers(0, 100),
    extra=st.dictionaries(
        st.text(min_size=1).map(lambda s: "x_" + s), st.integers() | st.text(), max_size=3
    ),
)
_tasks = st.builds(
    ImageTask,
    id=_text,
    status=st.sampled_from([*sorted(TaskStatus.TERMINAL), "queued", "in_progress", "new_status"]),
    task_id=st.none() | _text,
    model=st.none() | _text,
    created=st.none() | st.integers(0, 2**40),
    created_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    usage=st.none()
    | st.builds(Usage, st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9)),
    request_id=st.none() | _text,
)


@given(_requests)
def test_request_round_trips_through_the_converter(request: ImageRequest) -> None:
    """unstructure then structure gives back an equal request."""
    assert converter.structure(converter.unstructure(request), ImageRequest) == request


@given(_requests)
def test_payload_keeps_every_set_field(request: ImageRequest) -> None:
    """The wire payload holds exactly the set fields plus extra."""
    payload = request.to_payload()
    assert {k for k in payload if k not in request.extra} == {
        "model",
        "prompt",
    } | request.set_parameters()


@given(_tasks)
def test_task_round_trips_through_the_converter(task: ImageTask) -> None:
    """A task survives unstructure then structure unchanged."""
    assert converter.structure(converter.unstructure(task), ImageTask) == task


@pytest.mark.anyio
async def test_tasks_and_results_carry_the_request_id_of_their_answer(session: Session) -> None:
    """A create and the poll that saw completion keep their answers' x-request-id headers."""
    created = await session.tasks.create("gpt-image-2", "a star")
    assert created.request_id is not None
    assert created.request_id.startswith("req_")
    result = await session.track(created.id)
    assert result.request_id == result.task.request_id
    assert result.request_id is not None
    assert result.request_id != created.request_id


def test_an_inline_image_shows_its_size_not_its_bytes_in_a_repr() -> None:
    """A multi-megabyte base64 image never floods a log line or a traceback."""
    item = ImageData(b64_json="A" * 100_000)
    assert repr(item) == "ImageData(url=None, b64_json=<100000 base64 characters>)"
    assert "AAAA" not in repr(ImageTask(id="t", status="completed", data=(item,)))
