"""The documentation site: built once with `mkdocs build --strict`, then read as HTML."""

from __future__ import annotations

import ast
import html as html_text
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import attrs
import pytest

import worldrouter_async
from worldrouter_async.batch import BatchRunner

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


# Every knob a user can turn: the session, the batch runner, the policies and the request.
KNOBS: tuple[type, ...] = (
    worldrouter_async.Session,
    BatchRunner,
    worldrouter_async.Timeouts,
    worldrouter_async.Limits,
    worldrouter_async.PollPolicy,
    worldrouter_async.RetryPolicy,
    worldrouter_async.ImageRequest,
)
REQUIRED = object()


def _text(fragment: str) -> str:
    """The text of an HTML fragment, tags dropped and entities decoded."""
    return html_text.unescape(re.sub(r"<[^>]+>", "", fragment))


def _object_html(page: str, anchor: str) -> str:
    """The HTML documenting `anchor`, from its heading to the next heading of its level."""
    start = re.search(rf'<h(\d) id="{re.escape(anchor)}"', page)
    assert start is not None, f"{anchor} has no heading"
    end = page.find(f"<h{start.group(1)} ", start.end())
    return page[start.start() : end if end != -1 else len(page)]


def _anchor(cls: type) -> str:
    """The reference's anchor for `cls`: under `worldrouter_async`, or `.batch` for its names."""
    package = (
        "worldrouter_async.batch"
        if cls.__module__.startswith("worldrouter_async.batch")
        else "worldrouter_async"
    )
    return f"{package}.{cls.__name__}"


def _rendered_parameters(page: str, cls: type) -> dict[str, tuple[inspect._ParameterKind, str]]:
    """The parameters of `cls`'s signature as the reference prints it, with defaults as text."""
    block = _object_html(page, _anchor(cls))
    signature = re.search(r'<div class="[^"]*doc-signature[^"]*"><pre>(.*?)</pre>', block, re.S)
    assert signature is not None, f"{cls.__name__} has no signature in the reference"
    function = ast.parse(f"def {_text(signature.group(1)).strip()}: pass").body[0]
    assert isinstance(function, ast.FunctionDef)
    arguments = function.args
    positional = [(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in arguments.args]
    keyword = [(a, inspect.Parameter.KEYWORD_ONLY) for a in arguments.kwonlyargs]
    defaults: list[ast.expr | None] = [None] * (len(arguments.args) - len(arguments.defaults))
    defaults += [*arguments.defaults, *arguments.kw_defaults]
    return {
        argument.arg: (kind, ast.unparse(default) if default is not None else "")
        for (argument, kind), default in zip([*positional, *keyword], defaults, strict=True)
    }


def _field_default(field: attrs.Attribute[Any]) -> object:
    """What an attrs field holds when not given: its default, or what its factory builds."""
    if field.default is attrs.NOTHING:
        return REQUIRED
    if isinstance(field.default, attrs.Factory):
        return field.default.factory()
    return field.default


def _real_parameters(cls: type) -> dict[str, tuple[inspect._ParameterKind, object]]:
    """Each constructor argument of `cls`: its kind and its default (REQUIRED if none)."""
    if attrs.has(cls):
        return {
            field.alias: (
                inspect.Parameter.KEYWORD_ONLY
                if field.kw_only
                else inspect.Parameter.POSITIONAL_OR_KEYWORD,
                _field_default(field),
            )
            for field in attrs.fields(cls)
            if field.init and field.alias is not None
        }
    return {
        name: (p.kind, REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for name, p in inspect.signature(cls).parameters.items()
    }


def _converter(cls: type, name: str) -> Callable[[Any], Any]:
    """The converter an attrs field applies to what it is given (none: the identity)."""
    field = getattr(attrs.fields(cls), name) if attrs.has(cls) else None
    convert = field.converter if field is not None else None
    return convert if callable(convert) else (lambda value: value)


def _assert_shows_default(cls: type, name: str, shown: str, default: object) -> None:
    """`shown`, the reference's text for argument `name`'s default, evaluates to `default`."""
    namespace = {**getattr(cls.__init__, "__globals__", {}), **vars(worldrouter_async)}
    # The text is our own reference's, built from our own source a moment ago.
    value = eval(shown, namespace)  # noqa: S307
    convert = _converter(cls, name)
    assert convert(value) == convert(default), (cls.__name__, name, shown, default)


@pytest.mark.parametrize("cls", KNOBS, ids=lambda cls: cls.__name__)
def test_reference_signature_shows_every_argument_with_its_real_default(
    site: Path, cls: type
) -> None:
    """Each knob's signature in the reference lists every argument, keyword-only where the
    code says so, with a default that evaluates to the one the code really uses."""
    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    rendered = _rendered_parameters(page, cls)
    rendered.pop("self", None)
    real = _real_parameters(cls)
    assert list(rendered) == list(real)
    for name, (kind, default) in real.items():
        rendered_kind, rendered_default = rendered[name]
        assert rendered_kind == kind, name
        if default is REQUIRED:
            assert rendered_default == "", name
        else:
            _assert_shows_default(cls, name, rendered_default, default)


def _described_parameters(block: str) -> dict[str, tuple[str | None, str]]:
    """The first Parameters list of a documented object: name -> (default, description)."""
    start = block.index("Parameters:")
    items = re.findall(
        r'<li class="doc-section-item[^"]*">(.*?)</li>',
        block[start : block.index("</ul>", start)],
        re.S,
    )
    described = {}
    for item in items:
        name = re.search(r"<b><code>(.*?)</code></b>", item, re.S)
        default = re.search(r"default:\s*<code>(.*?)</code>", item, re.S)
        description = re.search(r'<div class="doc-md-description">(.*?)</div>', item, re.S)
        assert name is not None, item
        assert description is not None, item
        described[_text(name.group(1))] = (
            _text(default.group(1)) if default is not None else None,
            _text(description.group(1)).strip(),
        )
    return described


@pytest.mark.parametrize("cls", [worldrouter_async.Session, BatchRunner], ids=lambda c: c.__name__)
def test_reference_describes_every_argument_with_its_default(site: Path, cls: type) -> None:
    """`Session` and `BatchRunner` describe every argument in their Parameters list, each
    with the default the code really uses."""
    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    described = _described_parameters(_object_html(page, _anchor(cls)))
    for name, (_, default) in _real_parameters(cls).items():
        assert name in described, f"{cls.__name__}({name}=...) is not described"
        shown, description = described[name]
        assert description, name
        if default is not REQUIRED:
            assert shown is not None, name
            _assert_shows_default(cls, name, shown, default)


@pytest.mark.parametrize("cls", KNOBS[2:], ids=lambda cls: cls.__name__)
def test_reference_explains_every_field_of_the_policies_and_the_request(
    site: Path, cls: type
) -> None:
    """Each field of a policy and of `ImageRequest` has its own entry: type, default, and a
    sentence saying what it does."""
    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for field in attrs.fields(cls):
        block = _object_html(page, f"worldrouter_async.{cls.__name__}.{field.name}")
        code = re.search(r"<pre>(.*?)</pre>", block, re.S)
        assert code is not None, field.name
        signature = _text(code.group(1)).strip()
        assert signature.startswith(f"{field.name}: "), signature
        if _field_default(field) is not REQUIRED:
            assert " = " in signature, signature
        description = re.search(r'<div class="doc doc-contents[^"]*">\s*<p>(.*?)</p>', block, re.S)
        assert description is not None, field.name
        assert _text(description.group(1)).strip(), field.name


def test_reference_opens_with_the_session_and_draws_the_errors_as_a_tree(site: Path) -> None:
    """Session first, then handles, policies, models and errors (drawn as a tree); each
    public name documented once."""
    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    sections = re.findall(r'<h2 id="[^"]+"[^>]*>(.*?)<', page)
    assert [_text(s).strip() for s in sections][:5] == [
        "The session",
        "Handles and results",
        "Policies",
        "Models",
        "Errors",
    ]
    anchors = re.findall(r'<h\d id="(worldrouter_async[\w.]*)"', page)
    assert anchors[0] == "worldrouter_async.Session"
    # A public name is documented once, under its public path (not again under `.models`).
    top_level = [a for a in anchors if a.removeprefix("worldrouter_async.models.").count(".") <= 1]
    names = [a.rsplit(".", 1)[-1] for a in top_level]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
    errors_at = page.index('<h2 id="errors"')
    for name in worldrouter_async.__all__:
        obj = getattr(worldrouter_async, name)
        if isinstance(obj, type) and issubclass(obj, worldrouter_async.WorldRouterError):
            assert page.index(f'id="worldrouter_async.{name}"') > errors_at, name
    (tree,) = [b for b in _Page(page[errors_at:]).code_blocks if "* WorldRouterError" in b]
    assert "+ SessionClosedError" in tree


def test_concepts_draws_the_layers_in_the_order_data_flows(site: Path) -> None:
    """The concepts page opens with a diagram of every layer, request model -> transport ->
    task model -> poller -> handle, with the batch journal around them."""
    html = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    diagrams = re.findall(r'<pre class="mermaid"><code>(.*?)</code></pre>', html, re.S)
    layers = _text(diagrams[0])
    for name in ("batch journal", "request model", "transport", "task model", "poller", "handle"):
        assert f"<b>{name}</b>" in layers, name
    chain = ("journal", "request", "transport", "task", "poller", "handle", "journal")
    for source, target in itertools.pairwise(chain):
        assert re.search(rf"^\s*{source} -\.?->(\|[^|]*\|)? {target}$", layers, re.M), (
            source,
            target,
        )


# Injected first into a page under test: Material draws each diagram into a closed shadow
# root, which a probe could not read; opened, the diagram renders exactly the same.
_OPEN_SHADOWS = (
    "<script>const attach = Element.prototype.attachShadow;"
    "Element.prototype.attachShadow = function (options) {"
    " return attach.call(this, {...options, mode: 'open'}); };</script>"
)
# Injected last: once the page has loaded and every diagram is drawn, the probe's result
# is appended to the page as JSON, which --dump-dom then prints.
_REPORT = (
    "<script>addEventListener('load', function report(tries = 0) {{"
    " if (document.querySelector('pre.mermaid') && tries < 50)"
    "  return setTimeout(() => report(tries + 1), 100);"
    " const out = document.createElement('pre'); out.id = 'probe-result';"
    " out.textContent = JSON.stringify(({probe})()); document.body.append(out); }});"
    "</script>"
)


def _probe_in_chromium(chromium: Chromium, page: Path, width: int, probe: str) -> Any:
    """Run the JavaScript function `probe` in `page`, loaded by headless chromium with a
    `width` px wide window (all network traffic sent to a dead loopback proxy), and return
    what it returns.

    A copy of the page with the probe injected sits next to it, so its assets load.
    """
    html = page.read_text(encoding="utf-8")
    probed = html.replace("<head>", "<head>" + _OPEN_SHADOWS, 1).replace(
        "</body>", _REPORT.format(probe=probe) + "</body>", 1
    )
    copy = page.with_name(f"probe-{width}-{page.name}")
    copy.write_text(probed, encoding="utf-8")
    try:
        dom = chromium.dump_dom(
            copy.as_uri(),
            "--proxy-server=http://127.0.0.1:9",
            f"--window-size={width},900",
            budget_ms=10000,
        )
    finally:
        copy.unlink()
    result = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert result is not None, dom[-2000:]
    return json.loads(html_text.unescape(result.group(1)))


# The size a reader sees each diagram's labels at: the font size times the scale the
# diagram is drawn at (Mermaid shrinks a diagram wider than its box to fit).
_DIAGRAM_TEXT = """() => [...document.querySelectorAll('div.mermaid')].map(host => {
  const svg = host.shadowRoot.querySelector('svg');
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  const labels = [...svg.querySelectorAll('.nodeLabel, .edgeLabel')]
    .filter(label => label.textContent.trim());
  return Math.min(...labels.map(l => parseFloat(getComputedStyle(l).fontSize) * scale));
})"""


@pytest.mark.parametrize("width", [1280, 390])
def test_concepts_diagrams_are_drawn_at_reading_size(
    site: Path, width: int, chromium: Chromium
) -> None:
    """On a desktop and a phone, every label of the concepts diagrams is drawn at 14 px or
    more (the layers diagram was about 6 px, shrunk to fit its box)."""
    sizes = _probe_in_chromium(chromium, site / "concepts" / "index.html", width, _DIAGRAM_TEXT)
    assert min(sizes) >= 14, sizes
    assert len(sizes) >= 2  # the layers, and the inside of a session


# Where a page is wider than the window, and which code blocks hide part of their lines
# (wider than their box) and whether those scroll sideways inside it.
_OVERFLOW = """() => ({
  page: document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth,
  hidden: [...document.querySelectorAll('.md-content pre > code, .md-content div.mermaid')]
    .filter(box => box.scrollWidth > box.clientWidth)
    .map(box => ({
      starts: box.textContent.trim().slice(0, 60),
      scrolls: ['auto', 'scroll'].includes(getComputedStyle(box).overflowX),
    })),
})"""


@pytest.mark.parametrize("width", [1280, 390])
def test_architecture_diagram_is_drawn_at_reading_size(
    site: Path, width: int, chromium: Chromium
) -> None:
    """The architecture page's diagram of the layers is drawn, its labels at 14 px or more."""
    page = site / "architecture" / "index.html"
    sizes = _probe_in_chromium(chromium, page, width, _DIAGRAM_TEXT)
    assert len(sizes) == 1
    assert min(sizes) >= 14, sizes


@pytest.mark.parametrize("name", ["", "cli", "concepts", "architecture"])
def test_code_fits_a_desktop_window_and_scrolls_in_its_box_on_a_phone(
    site: Path, name: str, chromium: Chromium
) -> None:
    """At 1280 px every code block and diagram shows its lines whole; at 390 px the page is
    never wider than the phone, and a block wider than its box scrolls inside it."""
    page = site / name / "index.html"
    desktop = _probe_in_chromium(chromium, page, 1280, _OVERFLOW)
    assert desktop == {"page": 0, "hidden": []}
    phone = _probe_in_chromium(chromium, page, 390, _OVERFLOW)
    assert phone["page"] <= 0
    assert [box for box in phone["hidden"] if not box["scrolls"]] == []
