"""The documentation site: built strict, with every public name in its API
reference, and read in a headless Chromium.

The build does not depend on the Keras backend (the reference is read from
the source by griffe, nothing is imported), so these tests run on the JAX
leg of the suite only.
"""

import functools
import http.server
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import types
import urllib.parse

import griffe
import pytest

from tests import browser
from tests.conftest import only_on

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = only_on("jax")

_spec = importlib.util.spec_from_file_location(
    "docs_reference", ROOT / "scripts" / "docs_reference.py")
docs_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docs_reference)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return out


def test_the_strict_build_documents_every_public_name(site):
    _, names = docs_reference.public_names()
    qualified = [name for name, _ in names]
    assert "layerwise.layer_decay" in qualified and "layerwise.callbacks.EvaluateWithEMA" in qualified
    pages = "".join(p.read_text(encoding="utf-8")
                    for p in (site / "reference").rglob("index.html"))
    missing = [name for name in qualified if f'id="{name}"' not in pages]
    assert not missing, f"not in the built reference: {missing}"
    # Methods a class takes from a base class of the package are shown.
    assert 'id="layerwise.LayerwiseOptimizer.summary_rows"' in pages


def test_the_reference_lists_exactly_the_exported_names():
    import layerwise

    _, names = docs_reference.public_names()
    top = {q.split(".", 1)[1] for q, _ in names if q.count(".") == 1}
    assert top == {n for n in layerwise.__all__
                   if not isinstance(getattr(layerwise, n), type(layerwise))}
    assert {q for q, _ in names if q.startswith("layerwise.ops.")} == {
        f"layerwise.ops.{n}" for n in layerwise.ops.__all__}


def test_a_public_name_without_docstring_is_reported(tmp_path):
    init = ('__all__ = ["documented", "bare", "tools"]\n'
            "from pkg.core import documented, bare\nfrom pkg import tools\n")
    core = 'def documented():\n    """Does a thing."""\n\n\ndef bare():\n    pass\n'
    tools = "def helper():\n    pass\n"
    root = tmp_path / "pkg"
    root.mkdir()
    for name, text in {"__init__": init, "core": core, "tools": tools}.items():
        (root / f"{name}.py").write_text(text)
    package = griffe.load("pkg", search_paths=[str(tmp_path)])
    package, names = docs_reference.public_names(package)
    assert [q for q, _ in names] == ["pkg.documented", "pkg.bare", "pkg.tools.helper"]
    assert docs_reference.undocumented(package, names) == ["pkg.bare", "pkg.tools.helper"]


def test_doctest_runs_are_fenced_as_code():
    text = "Example:\n\n>>> x = [1][-1]\n>>> x\n1\n\nAfter.\n"
    assert docs_reference.fence_doctests(text) == (
        "Example:\n\n```pycon\n>>> x = [1][-1]\n>>> x\n1\n```\n\nAfter.")


@pytest.fixture(scope="module")
def served(site):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    executable = browser.find_chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine (scripts/setup.sh installs the "
                    "Debian package `chromium` where apt-get is available)")
    page = browser.Browser(executable, tmp_path_factory.mktemp("profile"))
    yield page
    page.close()


_SEARCH_RESULTS = """new Promise(resolve => {
  const start = Date.now();
  (function poll() {
    const links = [...document.querySelectorAll('.md-search-result__item a')]
      .map(a => a.getAttribute('href'));
    if (links.length || Date.now() - start > 15000) resolve(links);
    else setTimeout(poll, 100);
  })();
})"""


def test_the_site_renders_and_finds_layer_decay_in_chromium(served, chromium, tmp_path):
    chromium.open(served)
    assert chromium.evaluate("document.querySelector('article h1').textContent").startswith(
        "layerwise")
    nav = chromium.evaluate(
        "[...document.querySelectorAll('.md-nav__link')].map(a => a.textContent.trim())")
    assert {"How do I ...", "Troubleshooting", "Overview"} <= set(nav)
    chromium.screenshot(tmp_path / "index.png")

    chromium.open(served + "reference/recipes/")
    signature = chromium.evaluate(
        "document.getElementById('layerwise.layer_decay')"
        ".parentElement.querySelector('.doc-signature').textContent")
    assert signature.startswith("layer_decay(model, decay")
    chromium.screenshot(tmp_path / "reference.png")

    chromium.open(served + "?q=layer_decay")
    links = chromium.evaluate(_SEARCH_RESULTS)
    found = [urllib.parse.urlsplit(link) for link in links]
    assert any(u.path.endswith("/reference/recipes/") and u.fragment == "layerwise.layer_decay"
               for u in found), links
    chromium.screenshot(tmp_path / "search.png")
    assert chromium.errors == []
    if os.environ.get("LAYERWISE_SITE_SCREENSHOTS"):  # to look at them
        for name in ("index", "reference", "search"):
            shutil.copy(tmp_path / f"{name}.png", os.environ["LAYERWISE_SITE_SCREENSHOTS"])


def test_every_how_to_task_has_a_snippet_that_runs_and_a_reference_link():
    from tests import doc_blocks

    text = (ROOT / "docs" / "howto.md").read_text(encoding="utf-8")
    sections = text.split("\n## ")[1:]
    assert len(sections) >= 20
    blocks, _ = doc_blocks.parse(text, "docs/howto.md")
    assert not [b for b in blocks if b.not_runnable or b.backends]  # all run, everywhere
    _, names = docs_reference.public_names()
    documented = {name for name, _ in names}
    for section in sections:
        title = section.splitlines()[0]
        assert "```python" in section, title
        targets = re.findall(r"\]\[(layerwise\.[\w.]+)\]", section)
        assert targets, f"{title}: links no reference"
        assert set(targets) <= documented, (title, set(targets) - documented)


def test_a_link_out_of_the_site_shows_its_path_and_a_missing_one_is_reported(caplog):
    page = types.SimpleNamespace(file=types.SimpleNamespace(
        generated_by=None, src_path="observe.md", abs_src_path=str(ROOT / "docs" / "observe.md")))
    text = ("[`examples/quickstart.py`](../examples/quickstart.py), "
            "[gone](../examples/gone.py), [a page](recipes.md)")
    with caplog.at_level("WARNING"):
        shown = docs_reference.on_page_markdown(text, page, None, None)
    assert shown == "`examples/quickstart.py`, gone, [a page](recipes.md)"
    assert [r.getMessage() for r in caplog.records] == [
        "observe.md links to ../examples/gone.py, which does not exist"]
