"""MkDocs hook: the API reference, generated from what the package exports.

The names come from `layerwise.__all__` and from the submodules it lists
(`layerwise.callbacks`, `layerwise.layers`, `layerwise.ops`: their `__all__`,
else the public names they define), read statically with griffe, the
library mkdocstrings itself reads the code with. A name added to `__all__`
appears in the reference with no edit here; one without a docstring is
reported as a warning, which `mkdocs build --strict` turns into a failure.

One page per section (the subpackage that defines the names), so that names
differing only in case (`Observe`, `observe`) share a page rather than two
files that collide on a case-insensitive file system.

Links from a guide to a file of the repository outside `docs/`
(`../examples/x.py`) are checked to exist and shown as the path, since the
site has no copy of those files.
"""

import logging
import pathlib
import re

import griffe
from mkdocs.structure.files import File

PACKAGE = "layerwise"
ROOT = pathlib.Path(__file__).resolve().parent.parent

# (module prefix, page, title, introduction); the longest matching prefix
# wins, and a module no prefix names gets a page after its subpackage.
SECTIONS = (
    ("layerwise.optim", "optimizer", "Optimizer, rules and schedules",
     "The wrapper that gives each group of variables its own learning, and the "
     "rules that select the groups."),
    ("layerwise.optim.transforms", "transforms", "Gradient transforms",
     "Per-rule transforms of the gradient: `Rule(..., gradient=[...])`."),
    ("layerwise.optim.adaptive_clip", "transforms", "Gradient transforms", ""),
    ("layerwise.optim.centralize", "transforms", "Gradient transforms", ""),
    ("layerwise.recipes", "recipes", "Recipes",
     "Functions that return plain `Rule`s for the common fine-tuning and "
     "training recipes."),
    ("layerwise.reparam", "reparameterization", "Reparameterizations",
     "Train a function of a weight instead of the weight."),
    ("layerwise.observation", "observation", "Observation",
     "See inside training: per-layer statistics as metrics."),
    ("layerwise.callbacks", "callbacks", "layerwise.callbacks",
     "Callbacks that change how parameters learn while `fit` runs."),
    ("layerwise.layers", "layers", "layerwise.layers",
     "Layers for gradient control inside the graph."),
    ("layerwise.ops", "ops", "layerwise.ops",
     "Gradient control inside the graph, as functions."),
)

log = logging.getLogger("mkdocs.plugins.layerwise_reference")


def public_names(package=None):
    """The package (read by griffe) and [(qualified name, defining module)]
    of every public name, in the order of `__all__` (the submodules' names
    after the package's)."""
    package = package or griffe.load(PACKAGE, search_paths=[str(ROOT)])
    prefix = package.path
    exports = list(package.exports or ())
    found = [(f"{prefix}.{name}", _defining_module(package[name]))
             for name in exports if name not in package.modules]
    for sub in (name for name in exports if name in package.modules):
        module = package[sub]
        names = module.exports or [n for n, m in module.members.items() if m.is_public]
        for name in names:
            # A submodule's own page, even for a name it re-exports
            # (`layerwise.layers.Observe`): a reader looks there.
            found.append((f"{prefix}.{sub}.{name}", f"{prefix}.{sub}"))
    return package, found


def _defining_module(obj):
    target = obj.final_target if obj.is_alias else obj
    return target.parent.path if target.parent is not None else target.path


def _section(module):
    best = max((s for s in SECTIONS if module == s[0] or module.startswith(s[0] + ".")),
               key=lambda s: len(s[0]), default=None)
    if best is not None:
        return best[1], best[2]
    part = module.split(".")[1] if "." in module else module
    return part, part.capitalize()


def _intro(page):
    return next((s[3] for s in SECTIONS if s[1] == page and s[3]), "")


def _pages(names):
    pages = {}
    for qualified, module in names:
        page, title = _section(module)
        pages.setdefault(page, (title, []))[1].append(qualified)
    order = [s[1] for s in SECTIONS]
    return dict(sorted(pages.items(),
                       key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def _page_markdown(title, intro, qualified_names):
    lines = [f"# {title}", "", intro, ""] if intro else [f"# {title}", ""]
    for qualified in qualified_names:
        lines += [f"::: {qualified}", ""]
    return "\n".join(lines)


def _index_markdown(pages):
    lines = ["# API reference", "",
             "Every public name of `layerwise` and of its public submodules, "
             "generated from the docstrings.", ""]
    for page, (title, qualified_names) in pages.items():
        lines += [f"## {title}", ""]
        lines += [f"- [`{q}`][{q}]" for q in qualified_names]
        lines.append("")
    return "\n".join(lines)


_state = {}


def undocumented(package, names):
    """The qualified names among `names` whose object has no docstring."""
    missing = []
    for qualified, _ in names:
        obj = package[qualified.removeprefix(package.path + ".")]
        target = obj.final_target if obj.is_alias else obj
        if not (target.docstring and target.docstring.value.strip()):
            missing.append(qualified)
    return missing


def on_config(config):
    package, names = public_names()
    for qualified in undocumented(package, names):
        log.warning("%s has no docstring: the API reference would show "
                    "its name only", qualified)
    pages = _pages(names)
    _state["pages"] = pages
    config.nav = list(config.nav or []) + [{"Reference": [
        {"Overview": "reference/index.md"},
        *({title: f"reference/{page}.md"} for page, (title, _) in pages.items()),
    ]}]
    return config


def on_files(files, config):
    pages = _state["pages"]
    files.append(File.generated(config, "reference/index.md", content=_index_markdown(pages)))
    for page, (title, qualified_names) in pages.items():
        files.append(File.generated(
            config, f"reference/{page}.md",
            content=_page_markdown(title, _intro(page), qualified_names)))
    return files


_OUTSIDE_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>\.\./[^)#\s]+)\)")


def on_page_markdown(markdown, page, config, files):
    if page.file.generated_by:
        return markdown
    source = pathlib.Path(page.file.abs_src_path).parent

    def replace(match):
        target = (source / match["target"]).resolve()
        if target.is_relative_to(ROOT / "docs"):
            return match[0]  # a page of the site: MkDocs checks it
        if not target.exists():
            log.warning("%s links to %s, which does not exist",
                        page.file.src_path, match["target"])
        return match["text"]

    return _OUTSIDE_LINK.sub(replace, markdown)


class KerasExamples(griffe.Extension):
    """griffe extension: shows the doctest runs of Keras-style docstrings
    (`>>>` lines under an unindented `Example:`) as code blocks.

    Google style expects an indented `Examples:` section; unindented, the
    lines would be read as Markdown, where `x[0][-1]` is a link."""

    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)


def fence_doctests(text):
    """`text` with each run of doctest lines (a `>>>` line and the lines up
    to the next blank one) in a ```pycon fence."""
    out, run = [], []
    for line in text.splitlines() + [""]:
        if run and line.strip():
            run.append(line)
            continue
        if run:
            indent = run[0][: len(run[0]) - len(run[0].lstrip())]
            out += [f"{indent}```pycon", *run, f"{indent}```"]
            run = []
        if line.lstrip().startswith(">>>"):
            run.append(line)
        else:
            out.append(line)
    return "\n".join(out[:-1])
