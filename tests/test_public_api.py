"""The public surface: exactly the names in __all__, each documented and homed publicly."""

from __future__ import annotations

import inspect

import pytest

import worldrouter_async
import worldrouter_async.batch
import worldrouter_async.testing


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
