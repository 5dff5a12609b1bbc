"""The public surface: exactly the names in __all__, each documented and homed publicly."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import worldrouter_async
import worldrouter_async.batch
import worldrouter_async.testing
from worldrouter_async.batch.journal import SqliteFile


@pytest.mark.parametrize("module", [worldrouter_async, worldrouter_async.batch])
def test_all_lists_exactly_the_public_names(module: object) -> None:
    """Every public attribute is in __all__ and every __all__ entry exists."""
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in ("annotations",)
    }
    assert public == set(module.__all__) - {"__version__"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "module", [worldrouter_async, worldrouter_async.batch, worldrouter_async.testing]
)
def test_public_names_have_docstrings(module: object) -> None:
    """Every exported class and function says what it is for."""
    for name in module.__all__:  # type: ignore[attr-defined]
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_exported_classes_report_the_package_as_their_module() -> None:
    """Reprs and tracebacks show a public path (worldrouter_async or .models), never _private."""
    for name in worldrouter_async.__all__:
        value = getattr(worldrouter_async, name)
        if inspect.isclass(value):
            assert value.__module__ in ("worldrouter_async", "worldrouter_async.models"), name


def test_answers_not_believed_have_their_branches() -> None:
    """A bad answer is an APIResponseError; a task completed without an image ends like a
    failed one, so `except TaskFailedError` catches it."""
    wr = worldrouter_async
    assert issubclass(wr.TaskMismatchError, wr.APIResponseError)
    assert issubclass(wr.UnpollableTaskIdError, wr.APIResponseError)
    assert issubclass(wr.NoImagesError, wr.TaskFailedError)


def test_error_tree_roots_and_standard_bases() -> None:
    """One root; timeouts are TimeoutError, connection errors OSError, validation ValueError."""
    wr = worldrouter_async
    for name in wr.__all__:
        value = getattr(wr, name)
        if (
            inspect.isclass(value)
            and issubclass(value, Exception)
            and not issubclass(value, Warning)
        ):
            assert issubclass(value, wr.WorldRouterError), name
    assert issubclass(wr.APITimeoutError, TimeoutError)
    assert issubclass(wr.TaskTimeoutError, TimeoutError)
    assert issubclass(wr.APIConnectionError, OSError)
    assert issubclass(wr.InvalidRequestError, ValueError)
    assert issubclass(wr.IgnoredParameterWarning, UserWarning)
    assert issubclass(wr.WrongEventLoopError, RuntimeError)
    assert issubclass(wr.TaskAbandonedError, wr.TaskCancelledError)


def _public_callables() -> list[tuple[str, object]]:
    """Every exported function, class constructor and public method, by dotted name."""
    found: list[tuple[str, object]] = []
    for module in (worldrouter_async, worldrouter_async.batch, worldrouter_async.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value):
                found.append((name, value))
            elif inspect.isclass(value):
                found.append((name, value.__init__))
                found += [
                    (f"{name}.{member}", method)
                    for owner in value.__mro__[:-1]  # `Session` inherits its download methods
                    for member, method in vars(owner).items()
                    if not member.startswith("_") and inspect.isfunction(method)
                ]
    return found


def test_every_path_parameter_takes_str_and_pathlike() -> None:
    """A public parameter that takes a path accepts `str | os.PathLike[str]`, not only Path."""
    path_like = {str, os.PathLike[str]}
    checked = []
    for name, function in _public_callables():
        # Names imported for type checking only (`Tasks(session: Session)`) are public ones.
        hints = typing.get_type_hints(function, localns=vars(worldrouter_async))
        for parameter, hint in hints.items():
            union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
            accepted = set(typing.get_args(hint)) if union else {hint}
            if parameter != "return" and (Path in accepted or os.PathLike[str] in accepted):
                assert path_like <= accepted, f"{name}({parameter}: {hint})"
                checked.append(f"{name}.{parameter}")
    assert {
        "read_jsonl.path",
        "read_rows.path",
        "iter_rows.path",
        "BatchRunner.journal",
        "BatchRunner.out_dir",
        "Session.download.dest",
    } <= set(checked)


def _deprecated_names() -> set[str]:
    """The names the package warns about with a DeprecationWarning, read from the message
    each warning opens with ("Session.transport is deprecated: ...")."""
    package = Path(worldrouter_async.__file__).parent
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn"):
                continue
            if "DeprecationWarning" not in ast.unparse(node):
                continue
            message = ast.literal_eval(node.args[0])
            match = re.match(r"([\w.()]+) is deprecated", message)
            assert match, f"{path.name}: open the message with 'NAME is deprecated': {message}"
            names.add(match[1])
    return names


def test_every_deprecated_name_is_listed_in_the_changelog() -> None:
    """Each deprecated name has a line in a ``### Deprecated`` section of CHANGELOG.md."""
    changelog = (Path(__file__).parent.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^### Deprecated\n(.*?)(?=^##)", changelog, re.M | re.S)
    listed = "".join(sections)
    names = _deprecated_names()
    assert "Session.transport" in names
    assert not [name for name in names if f"`{name}`" not in listed], listed


def test_the_postgres_driver_is_imported_only_when_a_shared_journal_opens() -> None:
    """The base install has no psycopg: importing the package (and the CLI) never needs it."""
    code = (
        "import sys, worldrouter_async.batch, worldrouter_async.cli;print('psycopg' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.decode().strip() == "False"


def test_only_the_postgres_journal_is_shared(tmp_path: Path) -> None:
    """The runner claims rows only from a store that implements SharedJournalStore."""
    batch = worldrouter_async.batch
    shared = batch.PostgresJournal("postgresql://u@db.internal/images", job="j")
    local = batch.SqliteJournal(SqliteFile(tmp_path / "journal.sqlite3"))
    try:
        assert isinstance(shared, batch.SharedJournalStore)
        assert not isinstance(local, batch.SharedJournalStore)
    finally:
        local.file.close()
    assert batch.PostgresJournal.__module__ == "worldrouter_async.batch"
