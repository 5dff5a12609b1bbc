"""The documentation site: built once with `mkdocs build --strict`, then read as HTML."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import worldrouter_async

from .conftest import Chromium

ROOT = Path(__file__).parent.parent
MERMAID_SCRIPT = "assets/javascripts/mermaid.min.js"

pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
pytestmark = pytest.mark.slow


class _Page(HTMLParser):
    """One built page split into code blocks (`<pre>`), the prose around them (inline
    `<code>` spans, which quote names on purpose, left out), and scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.code_blocks: list[str] = []
        self.prose: list[str] = []
        self.scripts: list[str] = []
        self._in_pre = False
        self._in_code = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "pre":
            self._in_pre = True
            self.code_blocks.append("")
        elif tag == "code":
            self._in_code += 1
        elif tag == "script":
            self.scripts.extend(value or "" for name, value in attrs if name == "src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False
        elif tag == "code" and self._in_code:
            self._in_code -= 1

    def handle_data(self, data: str) -> None:
        if self._in_pre:
            self.code_blocks[-1] += data
        elif not self._in_code:
            self.prose.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `mkdocs build --strict` writes it (warnings fail the build)."""
    site_dir = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return site_dir


def _page(site: Path, name: str) -> _Page:
    return _Page((site / name / "index.html").read_text(encoding="utf-8"))


def _pages(site: Path) -> dict[str, _Page]:
    return {
        str(path.relative_to(site)): _Page(path.read_text(encoding="utf-8"))
        for path in site.rglob("*.html")
    }


def test_every_docstring_example_renders_as_code(site: Path) -> None:
    """No page shows a raw `Example:` header or `>>>` prompt outside a code block."""
    for name, page in _pages(site).items():
        prose = "".join(page.prose)
        assert "Example:" not in prose, name
        assert ">>>" not in prose, name
    reference = _page(site, "reference")
    examples = [block for block in reference.code_blocks if block.startswith(">>> ")]
    assert len(examples) >= 15
    assert any("async with worldrouter_async.Session() as session" in b for b in examples)


def test_reference_shows_only_public_names(site: Path) -> None:
    """The API reference documents every exported name and no private one."""
    html = (site / "reference" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<h\d id="(worldrouter_async[\w.]*)"', html))
    private = [a for a in anchors if any(part.startswith("_") for part in a.split("."))]
    assert private == []
    assert "__all__" not in "".join(_Page(html).prose)
    for name in worldrouter_async.__all__:
        if callable(getattr(worldrouter_async, name)):
            assert f"worldrouter_async.{name}" in anchors, name


def test_errors_guide_draws_the_exception_tree_as_code(site: Path) -> None:
    """The exception tree is one code block with every exported error on its own line."""
    page = _page(site, "guides/errors")
    (tree,) = [block for block in page.code_blocks if "* WorldRouterError" in block]
    errors = [
        name
        for name in worldrouter_async.__all__
        if isinstance(obj := getattr(worldrouter_async, name), type)
        and issubclass(obj, worldrouter_async.WorldRouterError)
        and obj is not worldrouter_async.WorldRouterError
    ]
    for name in errors:
        assert re.search(rf"^\s+\+ {name}\b", tree, re.MULTILINE), name
    assert "+ APIError" not in "".join(page.prose)


def test_mermaid_diagrams_load_the_bundled_script(site: Path) -> None:
    """Pages with a diagram load Mermaid from the site itself, and no script from elsewhere."""
    script = site / MERMAID_SCRIPT
    assert 'globalThis["mermaid"]' in script.read_text(encoding="utf-8")
    with_diagrams = 0
    for name, page in _pages(site).items():
        assert not [src for src in page.scripts if "//" in src], name
        html = (site / name).read_text(encoding="utf-8")
        if 'class="mermaid"' in html:
            with_diagrams += 1
            assert any(src.endswith(MERMAID_SCRIPT) for src in page.scripts), name
            loaded = (site / name).parent / next(
                src for src in page.scripts if src.endswith(MERMAID_SCRIPT)
            )
            assert loaded.resolve() == script.resolve(), name
    assert with_diagrams >= 1


def test_concepts_diagram_renders_offline_in_a_browser(site: Path, chromium: Chromium) -> None:
    """Headless chromium, all its traffic sent to a dead loopback proxy, draws the diagram."""
    dom = chromium.dump_dom(
        (site / "concepts" / "index.html").as_uri(),
        "--proxy-server=http://127.0.0.1:9",
        budget_ms=8000,
    )
    assert "The due-time queue" in dom
    assert "flowchart" not in dom
    assert '<div class="mermaid">' in dom


def test_testing_guide_shows_the_emulator_fixtures_and_fault_knobs(site: Path) -> None:
    """The testing guide shows the emulator context manager, both plugins and the faults."""
    code = "\n".join(_page(site, "guides/testing").code_blocks)
    for snippet in (
        "async with Emulator() as emu",
        "emu.base_url",
        "@pytest.mark.anyio",
        "pytestmark = pytest.mark.asyncio",
        'pytest_plugins = ["worldrouter_async.testing.pytest_plugin"]',
        'emu.inject("503", route="create", count=2)',
        "[fail:content_policy]",
    ):
        assert snippet in code, snippet
