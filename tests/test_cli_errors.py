"""The CLI's exception edge: groups unwrapped, one line per failure, the right exit code."""

from __future__ import annotations

import asyncio
import errno

import pytest

from worldrouter_async import AuthenticationError, ConfigurationError
from worldrouter_async._errors import first_leaf
from worldrouter_async.cli._errors import in_cli_terms, one_line, report


def test_first_leaf_skips_cancellations_and_nested_groups() -> None:
    """The reported error is the first real failure, however deep the task groups nest it."""
    failure = PermissionError(errno.EACCES, "Permission denied", "out/a.png")
    group = BaseExceptionGroup(
        "outer", [asyncio.CancelledError(), ExceptionGroup("inner", [failure, ValueError()])]
    )
    assert first_leaf(group) is failure
    only_cancelled = BaseExceptionGroup("g", [asyncio.CancelledError()])
    assert first_leaf(only_cancelled) is only_cancelled


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            ExceptionGroup("g", [PermissionError(errno.EACCES, "Permission denied", "o/a.png")]),
            1,
            "worldrouter-async: error: o/a.png: Permission denied",
        ),
        (
            AuthenticationError("bad key", status=401),
            1,
            "worldrouter-async: AuthenticationError: bad key (HTTP 401)",
        ),
        (
            ConfigurationError("pass allow_insecure=True for a trusted network"),
            2,
            "worldrouter-async: error: pass --insecure for a trusted network",
        ),
        (
            KeyError("oops"),
            1,
            "worldrouter-async: internal error: KeyError: 'oops' "
            "(rerun with --debug for the traceback, and please report it)",
        ),
        (KeyboardInterrupt(), 130, "worldrouter-async: interrupted"),
    ],
)
def test_report_prints_one_line_and_returns_the_exit_code(
    capsys: pytest.CaptureFixture[str], error: BaseException, code: int, line: str
) -> None:
    """Each kind of failure is one stderr line and a documented exit code."""
    assert report(error, debug=False) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_interrupting_a_resumable_command_says_how_to_resume(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only commands that resume (batch, demo) advise rerunning the same command."""
    assert report(KeyboardInterrupt(), debug=False, resumable=True) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err


def test_debug_adds_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """--debug prints the traceback, then the same one line."""
    with pytest.raises(ExceptionGroup) as raised:
        raise ExceptionGroup("g", [FileExistsError(errno.EEXIST, "File exists", "afile")])
    assert report(raised.value, debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.splitlines()[-1] == "worldrouter-async: error: afile: File exists"


def test_in_cli_terms_rewords_python_names() -> None:
    """Session argument names become the flags that set them."""
    assert in_cli_terms("task_timeout must be positive") == "--timeout must be positive"


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        ("or start over on purpose with new_journal=True (CLI: --new-journal)", "--new-journal"),
        ("Resend it with retry_ambiguous_creates=True only if", "--retry-ambiguous only"),
        (
            "Incorrect API key provided. (HTTP 401, code='invalid_api_key', request_id='req_1')",
            "(HTTP 401, code invalid_api_key, request_id req_1)",
        ),
    ],
)
def test_runner_messages_name_the_flags(library: str, cli: str) -> None:
    """Python argument names become the flags that set them; fields lose Python's quotes."""
    assert cli in in_cli_terms(library)
    assert "=" not in in_cli_terms(library)


def test_one_line_is_the_message_report_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """--json carries the same words as the stderr line; an interrupt reads 'interrupted'."""
    error = AuthenticationError("bad key", status=401)
    report(error, debug=False)
    assert capsys.readouterr().err == f"worldrouter-async: {one_line(error)}\n"
    assert one_line(BaseExceptionGroup("g", [asyncio.CancelledError()])) == "interrupted"
