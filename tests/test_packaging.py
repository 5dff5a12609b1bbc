"""The distribution's metadata: license, supported Pythons, and every direct import declared."""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

import worldrouter_async

PACKAGE = Path(worldrouter_async.__file__).parent
ROOT = PACKAGE.parent

# Imported only where the user already has them: the CLI (the `cli` extra), bucket outputs (the
# `s3` extra), the PostgreSQL journal (the `postgres` extra, imported when one opens) and the
# pytest plugin.
OPTIONAL_IMPORTS = {
    "rich": "cli",
    "obstore": "s3",
    "psycopg": "postgres",
    "pytest": None,
    "pytest_asyncio": None,
}


def _third_party_imports() -> set[str]:
    """Top-level names of the packages worldrouter_async's modules import."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"worldrouter_async"}


def test_every_direct_import_is_a_declared_dependency() -> None:
    """A package the code imports is a runtime dependency, or optional by design."""
    requirements = [Requirement(r) for r in metadata.requires("worldrouter-async") or []]
    runtime = {r.name.lower() for r in requirements if r.marker is None}
    distributions = metadata.packages_distributions()
    imported = _third_party_imports()
    assert {"aiohttp", "anyio", "attrs", "cattrs", "yarl"} <= imported
    for name in imported - OPTIONAL_IMPORTS.keys():
        provided_by = {d.lower() for d in distributions.get(name, [name])}
        assert provided_by & runtime, f"{name} is imported but not declared in dependencies"
    for name, extra in OPTIONAL_IMPORTS.items():
        if extra is not None:
            in_extra = {
                r.name for r in requirements if r.marker and r.marker.evaluate({"extra": extra})
            }
            assert name in in_extra, f"{name} is imported but not in the {extra} extra"


def test_license_file_matches_the_metadata() -> None:
    """The MIT license text ships beside the code the metadata says is MIT-licensed."""
    meta = metadata.metadata("worldrouter-async")
    assert meta["License-Expression"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_classifiers_name_each_supported_python() -> None:
    """One classifier per supported Python minor version, matching requires-python."""
    meta = metadata.metadata("worldrouter-async")
    versions = {
        c.rsplit(" :: ", 1)[1]
        for c in meta.get_all("Classifier") or []
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert versions == {"3.11", "3.12", "3.13"}
    assert meta["Requires-Python"] == ">=3.11"
    assert meta.get_all("Project-URL")
