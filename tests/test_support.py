"""The documented support matrix warns about parameters a model silently ignores."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import pytest

from worldrouter_async import (
    IgnoredParameterError,
    IgnoredParameterWarning,
    ImageRequest,
    Session,
    ignored_parameters,
)
from worldrouter_async.batch import read_jsonl
from worldrouter_async.testing import Emulator

from .conftest import SessionFactory


def test_gemini_ignores_size_n_and_quality() -> None:
    """Gemini sets are reported sorted; output_format (storage fallback) is not."""
    request = ImageRequest(
        model="gemini-2.5-flash-image",
        prompt="p",
        size="1024x1024",
        n=2,
        quality="high",
        output_format="png",
    )
    assert ignored_parameters(request) == ("n", "quality", "size")


def test_gpt_image_and_unknown_models_ignore_nothing() -> None:
    """gpt-image-2 honours everything; unknown models are never guessed at."""
    for model in ("gpt-image-2", "my-deployment-model"):
        assert ignored_parameters(ImageRequest(model=model, prompt="p", size="auto", n=3)) == ()


@pytest.mark.anyio
async def test_submit_warns_and_still_creates(session: Session, emulator: Emulator) -> None:
    """The warning points at the caller, and the task is created anyway."""
    with pytest.warns(
        IgnoredParameterWarning, match="gemini-2.5-flash-image ignores size"
    ) as caught:
        result = await session.generate("gemini-2.5-flash-image", "a cat", size="512x512")
    assert caught[0].filename == __file__
    assert emulator.counters.creates == 1
    assert "size" not in emulator.tasks[result.task_id].params


@pytest.mark.anyio
async def test_strict_session_refuses_before_sending(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """strict=True turns the warning into an error, and nothing is sent."""
    async with make_session(strict=True) as strict:
        with pytest.raises(IgnoredParameterError, match="ignores n"):
            await strict.submit("gemini-3-pro-image-preview", "a cat", n=2)
    assert emulator.counters.create_requests == 0


@pytest.mark.anyio
async def test_no_warning_for_honoured_parameters(session: Session) -> None:
    """gpt-image-2 with size and n emits no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await session.generate("gpt-image-2", "a cat", size="1024x1024", n=2)


def test_read_jsonl_warns_at_the_line_of_the_request(tmp_path: Path) -> None:
    """A batch file's ignored parameter is reported with the file's name and line number."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "fine", "model": "gpt-image-2", "size": "1024x1024"}\n'
        "\n"
        '{"prompt": "x", "model": "gemini-2.5-flash-image", "quality": "high"}\n'
    )
    with pytest.warns(IgnoredParameterWarning, match="ignores quality") as caught:
        items, errors = read_jsonl(prompts)
    assert (len(items), errors) == (2, [])
    assert [(w.filename, w.lineno) for w in caught] == [(str(prompts), 3)]


@pytest.mark.anyio
async def test_submit_warning_points_at_the_callers_line(session: Session) -> None:
    """submit, like generate, blames the line that called it, not the SDK or anyio."""
    line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.warns(IgnoredParameterWarning) as caught:
        await session.submit("gemini-2.5-flash-image", "a cat", n=2)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)


@pytest.mark.anyio
async def test_submit_many_warning_points_at_the_callers_line(session: Session) -> None:
    """submit_many checks every request before its workers start, so it blames the caller."""
    requests = [{"model": "gemini-2.5-flash-image", "prompt": "a cat", "n": 2}]
    line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.warns(IgnoredParameterWarning) as caught:
        handles = await session.submit_many(requests)
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]
    assert (await handles[0]).urls  # the task was still created, once


@pytest.mark.anyio
async def test_a_request_reported_when_read_is_submitted_without_a_second_warning(
    session: Session, emulator: Emulator
) -> None:
    """report_ignored names the input's line; submit_request(reported=True) stays silent."""
    request = ImageRequest(model="gemini-2.5-flash-image", prompt="a cat", size="512x512")
    with pytest.warns(IgnoredParameterWarning, match="ignores size") as caught:
        session.report_ignored(request, source="prompts.jsonl", line=4)
    assert [(w.filename, w.lineno) for w in caught] == [("prompts.jsonl", 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle = await session.submit_request(request, reported=True)
    assert (await handle).urls
    assert emulator.counters.creates == 1


@pytest.mark.anyio
async def test_a_strict_session_reports_nothing_and_refuses_a_reported_request(
    make_session: SessionFactory, emulator: Emulator
) -> None:
    """Strict mode refuses at submit, so the report is silent and nothing is sent."""
    request = ImageRequest(model="gemini-2.5-flash-image", prompt="a cat", n=2)
    async with make_session(strict=True) as strict:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            strict.report_ignored(request, source="prompts.jsonl", line=1)
        with pytest.raises(IgnoredParameterError, match="ignores n"):
            await strict.submit_request(request, reported=True)
    assert emulator.counters.create_requests == 0
