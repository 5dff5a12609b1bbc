"""The package's shape, read from every module's syntax tree (`ast`; nothing is imported).

Three rules, drawn in docs/architecture.md (whose paragraphs on the core's layers a last
test holds to `CORE_LAYERS`):

1. **Size.** No module is over `MAX_LINES` lines: each does one job and fits on a few
   screens.
2. **Privacy.** The packages are the top-level package (the *core*) and its public
   subpackages `batch`, `batch.journal`, `cli` and `testing`. A private subpackage
   (`_transports`, `testing._emulator`) is part of the package that holds it. A module
   whose path, after its package's, has a part starting with ``_`` is private to that
   package, and so is a name starting with ``_``. A module may use:

   - anything of its own package;
   - the private *modules* of a package that contains it, for their public names only:
     a subpackage is part of its parent, as anyio's ``streams/`` imports ``anyio._core``
     (so `batch` imports ``worldrouter_async._session.Session``, and `batch.journal`
     imports ``batch._errors.JournalError``);
   - of any other package, only its public modules and names: the CLI imports
     ``worldrouter_async.batch``, never ``batch._gallery``.

   Private attributes count too: a module may not touch ``x._name`` where ``_name`` is
   defined only outside its own package (``session._report_ignored`` from `batch`).
3. **Layers.** Imports run down: `cli` over `batch` (whose `journal` is below the rest of
   it) and `testing`, all over the core, whose own layers are `CORE_LAYERS`. The CLI
   imports `testing` only inside the commands that run the emulator, so the others start
   without it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Final

import pytest
from attrs import define

PACKAGE: Final = "worldrouter_async"
SOURCE: Final = Path(__file__).parent.parent / PACKAGE
MAX_LINES: Final = 400
#: Modules still over `MAX_LINES`, waiting to be split by job, with their length when they
#: were listed (the PostgreSQL journal's round): one may not grow, and once it fits it must
#: leave this list. Empty it; never add to it.
TO_SPLIT: Final[dict[str, int]] = {}
#: The public subpackages; each is a package of its own (rule 2).
SUBPACKAGES: Final = ("batch.journal", "batch", "cli", "testing")

#: The core's layers, lowest first: for each, the layers below it that it may import, and
#: its modules (relative to the package; a module also imports freely within its layer).
#: The poller and the submit path are handed the API's calls, so they import no wire and
#: no API client. A new core module goes in the layer of its job (docs/architecture.md).
CORE_LAYERS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "values": (
        frozenset(),
        frozenset(
            {
                "models", "_errors", "_config", "_clock", "_logs", "_version", "_startup",
                "_support", "_images", "_due", "_handles",
            }
        ),
    ),
    "wire": (
        frozenset({"values"}),
        frozenset(
            {"_transports", "_transports.base", "_transports.network", "_transports.aiohttp"}
        ),
    ),
    "observers": (
        frozenset({"values", "wire"}),
        frozenset({"_hooks", "_stats", "_events", "_log_events"}),
    ),
    "policies": (
        frozenset({"values", "observers"}),
        frozenset({"_retries", "_throttle", "_breaker"}),
    ),
    "api": (
        frozenset({"values", "wire", "observers", "policies"}),
        frozenset({"_api", "_answers", "_settings", "_download"}),
    ),
    "tracking": (
        frozenset({"values", "observers", "policies"}),
        frozenset({"_poller", "_poll_workers", "_poll_answers", "_cadence"}),
    ),
    "submit": (
        frozenset({"values", "observers", "policies", "tracking"}),
        frozenset({"_submit", "_creates", "_requests", "_pipeline"}),
    ),
    "front": (
        frozenset({"values", "wire", "observers", "policies", "api", "tracking", "submit"}),
        frozenset(
            {
                "", "_session", "_lifecycle", "_session_downloads", "_session_reports",
                "_session_deprecated", "_task_endpoints",
            }
        ),
    ),
}  # fmt: skip

#: The packages each package may import, besides its own modules and the core.
PACKAGE_USES: Final[dict[str, frozenset[str]]] = {
    "": frozenset(),
    "batch.journal": frozenset(),
    "batch": frozenset({"batch.journal"}),
    "testing": frozenset(),
    "cli": frozenset({"batch", "batch.journal", "testing"}),
}
#: Modules of a higher package that a lower one may import: `batch.journal` raises the
#: errors of the whole `batch` package, defined in `batch._errors`.
SHARED_DOWNWARD: Final = frozenset({"batch._errors"})
#: The CLI's entry point (``python -m worldrouter_async``) is part of the CLI.
ENTRY_POINT: Final = "__main__"


@define(frozen=True)
class Module:
    """One module of the package: its name relative to the package ("" for the package
    itself), its file, and whether it is a package's ``__init__``."""

    name: str
    path: Path
    is_package: bool

    @property
    def tree(self) -> ast.Module:
        return _parse(self.path)

    @property
    def package(self) -> str:
        """The package it belongs to (rule 2): a public subpackage, or "" for the core."""
        return package_of(self.name)


@define(frozen=True)
class Import:
    """One imported module or name, as `module` (relative to the package) and `name`."""

    module: str
    name: str | None
    line: int
    at_top: bool  # at module level, not inside a function


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found.append(Module(".".join(parts), path, is_package))
    return tuple(found)


def package_of(name: str) -> str:
    """The package a module belongs to: the public subpackage holding it, else the core."""
    if name == ENTRY_POINT:
        return "cli"
    for package in SUBPACKAGES:
        if name == package or name.startswith(package + "."):
            return package
    return ""


def _is_private(parts: list[str]) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in parts)


def _within(name: str, package: str) -> bool:
    return package == "" or name == package or name.startswith(package + ".")


def imports(module: Module) -> Iterator[Import]:
    """Every import of a module of this package, resolved to names relative to it."""
    known = {m.name for m in modules()}
    for node, in_function in _walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    name = alias.name[len(PACKAGE) + 1 :]
                    yield Import(name, None, node.lineno, at_top=not in_function)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target is None:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}".lstrip(".")
                if submodule in known:
                    yield Import(submodule, None, node.lineno, at_top=not in_function)
                else:
                    yield Import(target, alias.name, node.lineno, at_top=not in_function)


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under `node`, and whether it is inside a function (not run on import)."""
    for child in ast.iter_child_nodes(node):
        inside = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield child, inside
        yield from _walk(child, inside)


def _resolve(module: Module, node: ast.ImportFrom) -> str | None:
    """The module an ``from ... import`` names, relative to the package; None if outside."""
    if node.level == 0:
        name = node.module or ""
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return None
        return name[len(PACKAGE) + 1 :]
    base = module.name.split(".") if module.name else []
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _private_module_of_other(module: Module, target: str) -> bool:
    """Whether importing `target` from `module` reaches a private module of another package
    that does not contain `module`."""
    owner = package_of(target)
    if owner == module.package:
        return False
    inside = target[len(owner) + 1 :] if owner else target
    if not _is_private(inside.split(".")):
        return False
    return not _within(module.name, owner)


def test_no_module_is_over_the_line_limit() -> None:
    """Every module fits in MAX_LINES lines, but those listed in TO_SPLIT, which may not
    grow and leave the list once they fit."""
    lengths = {
        m.path.relative_to(SOURCE).as_posix(): len(m.path.read_text("utf-8").splitlines())
        for m in modules()
    }
    over = {
        path: lines
        for path, lines in lengths.items()
        if lines > MAX_LINES and lines > TO_SPLIT.get(path, 0)
    }
    assert not over, f"modules over {MAX_LINES} lines (split them by job): {over}"
    fits = [path for path, lines in TO_SPLIT.items() if lengths.get(path, 0) <= MAX_LINES]
    assert not fits, f"these fit in {MAX_LINES} lines now: take them off TO_SPLIT: {fits}"


def test_no_import_reaches_into_another_package_s_private_modules_or_names() -> None:
    """A module imports another package's private modules only if that package contains
    it, and another package's private names never."""
    found = []
    for module in modules():
        for imported in imports(module):
            where = f"{module.path.relative_to(SOURCE.parent)}:{imported.line}"
            other = package_of(imported.module) != module.package
            if _private_module_of_other(module, imported.module):
                found.append(f"{where} imports private module {imported.module}")
            elif other and imported.name is not None and _is_private([imported.name]):
                found.append(f"{where} imports private name {imported.module}.{imported.name}")
    assert not found, "use the package's public names instead:\n" + "\n".join(found)


def _private_names_defined(package: str) -> frozenset[str]:
    """Every private name a package defines: functions, classes, attributes, variables."""
    names: set[str] = set()
    for module in modules():
        if module.package != package:
            continue
        for node in ast.walk(module.tree):
            match node:
                case ast.FunctionDef(name=name) | ast.AsyncFunctionDef(name=name):
                    names.add(name)
                case ast.ClassDef(name=name):
                    names.add(name)
                case ast.Attribute(attr=name, ctx=ast.Store()):
                    names.add(name)
                case ast.Name(id=name, ctx=ast.Store()):
                    names.add(name)
    return frozenset(name for name in names if _is_private([name]))


def test_no_module_touches_private_attributes_defined_in_another_package() -> None:
    """``x._name`` only where ``_name`` is defined in the module's own package (the batch
    runner uses the session's public API, never ``session._report_ignored``). Private
    names that no package of ours defines (``sys._getframe``) are not ours to judge."""
    defined = {package: _private_names_defined(package) for package in PACKAGE_USES}
    found = []
    for module in modules():
        own = defined[module.package]
        others = frozenset().union(*defined.values()) - own
        found += [
            f"{module.path.relative_to(SOURCE.parent)}:{node.lineno} .{node.attr}"
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Attribute) and node.attr in others
        ]
    assert not found, "private attributes of another package:\n" + "\n".join(found)


def core_layer(name: str) -> str:
    for layer, (_, members) in CORE_LAYERS.items():
        if name in members:
            return layer
    raise AssertionError(
        f"core module {PACKAGE}.{name or '__init__'} is in no layer: add it to the layer "
        "of its job in tests/test_architecture.py CORE_LAYERS and docs/architecture.md"
    )


def test_every_core_module_has_a_layer() -> None:
    """A new core module is placed in a layer before its imports can be checked."""
    for module in modules():
        if module.package == "":
            core_layer(module.name)


def _upward(module: Module, target: str) -> str | None:
    """Why importing `target` from `module` runs up the layers, or None."""
    source, owner = module.package, package_of(target)
    if source == "" and owner == "":
        layer, target_layer = core_layer(module.name), core_layer(target)
        allowed = CORE_LAYERS[layer][0] | {layer}
        if target_layer not in allowed:
            return f"core layer {layer!r} imports layer {target_layer!r}"
        return None
    if owner == "" or owner == source or target in SHARED_DOWNWARD:
        return None
    if owner not in PACKAGE_USES[source]:
        return f"package {source or 'core'!r} imports package {owner!r}"
    return None


def test_imports_run_down_the_layers() -> None:
    """Each import goes to the same layer or one below it (docs/architecture.md)."""
    found = []
    for module in modules():
        for imported in imports(module):
            if (why := _upward(module, imported.module)) is not None:
                where = f"{module.path.relative_to(SOURCE.parent)}:{imported.line}"
                found.append(f"{where} ({imported.module}): {why}")
    assert not found, "imports running up the layers:\n" + "\n".join(found)


def test_the_cli_imports_testing_only_inside_its_emulator_commands() -> None:
    """The CLI starts without the emulator: `testing` is imported inside a function."""
    found = [
        f"{module.path.relative_to(SOURCE.parent)}:{imported.line}"
        for module in modules()
        if module.package == "cli"
        for imported in imports(module)
        if package_of(imported.module) == "testing" and imported.at_top
    ]
    assert not found, f"module-level imports of {PACKAGE}.testing in the CLI: {found}"


@pytest.mark.parametrize(
    ("importer", "target", "private"),
    [
        ("cli._gallery", "batch._gallery", True),
        ("cli._status", "batch.journal", False),
        ("batch._runner", "_session", False),
        ("batch.journal._sqlite", "batch._errors", False),
        ("batch._runner", "batch.journal._rows", True),
        ("_session", "batch._runner", True),
        ("testing._memory", "_transports.base", False),
        ("cli._emulator", "testing._emulator", True),
    ],
)
def test_what_counts_as_another_package_s_private_module(
    importer: str, target: str, private: bool
) -> None:
    """The rule as the docstring states it, on examples of each case."""
    module = Module(importer, SOURCE / "unused.py", is_package=False)
    assert _private_module_of_other(module, target) is private


#: The paragraph of docs/architecture.md that describes each core layer.
LAYER_TITLES: Final = {
    "values": "values",
    "wire": "transports",
    "observers": "observers",
    "policies": "API layer",
    "api": "API layer",
    "tracking": "submit, creates, poller",
    "submit": "submit, creates, poller",
    "front": "Session front",
}
ARCHITECTURE_PAGE: Final = SOURCE.parent / "docs" / "architecture.md"


def _file_of(name: str) -> str:
    """How the architecture page names a core module: ``_poller.py``, ``_transports/``."""
    if name.startswith("_transports"):
        return "_transports/"
    return f"{name.rpartition('.')[2] or '__init__'}.py"


def test_the_architecture_page_names_each_core_module_in_its_layer() -> None:
    """The page's paragraph on each layer names every module the test places in it, so
    the drawing and the rule cannot drift apart."""
    paragraphs = {
        match[1]: match[2]
        for match in re.finditer(
            r"^\*\*([^*]+)\*\* (.*?)(?=\n\n)", ARCHITECTURE_PAGE.read_text("utf-8"), re.M | re.S
        )
    }
    missing = [
        f"{_file_of(module)} ({layer})"
        for layer, (_, members) in CORE_LAYERS.items()
        for module in members
        if f"`{_file_of(module)}`" not in paragraphs.get(f"{LAYER_TITLES[layer]}", "")
    ]
    assert not missing, f"not named in its layer's paragraph of {ARCHITECTURE_PAGE.name}: {missing}"
