"""Every fenced Python block of README.md and docs/*.md runs, so the
documentation cannot drift from the code.

The blocks of one document run in order in one namespace, like the cells of
a notebook: a later block uses what an earlier one defined. Each document
starts from a fresh namespace, a cleared Keras session, fixed seeds and its
own working directory. A block that cannot run here carries a marker on the
line above its fence (see `tests/doc_blocks.py`): `<!-- not runnable: why -->`,
`<!-- runs on: tensorflow -->` or `<!-- own process: why -->`.
"""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import doc_blocks
from tests.conftest import BACKEND

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md"] + sorted(
    f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")
)


def _parse(document):
    path = ROOT / document
    return doc_blocks.parse(path.read_text(encoding="utf-8"), document, str(path))


PARSED = {document: _parse(document) for document in DOCUMENTS}
BLOCKS = [block for blocks, _ in PARSED.values() for block in blocks]


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # Replaces the suite's per-test reset: the blocks of a document share one
    # Keras session (layer names keep counting, as in a notebook); a
    # `_Notebook` resets it when a document starts.
    yield


class _Notebook:
    """The blocks of one document run so far, and their namespace."""

    def __init__(self, blocks, workdir):
        self.blocks = blocks
        self.workdir = workdir
        self.reset()

    def reset(self):
        keras.backend.clear_session()
        keras.utils.set_random_seed(1234)
        np.random.seed(1234)
        self.namespace = {"__name__": "__main__"}
        self.ran = 0  # blocks 1..ran have been run (or skipped)
        self.failed = None

    def run_through(self, block):
        """Runs the blocks before `block` that have not run yet, then
        `block`. Re-running a block, or running one out of order, replays
        the document from its start."""
        if self.ran >= block.number:
            self.reset()
        for earlier in self.blocks[self.ran:block.number - 1]:
            if self.failed is None:
                try:
                    self._run(earlier)
                except Exception:
                    self.failed = earlier
            self.ran = earlier.number
        if self.failed is not None:
            pytest.skip(f"follows {self.failed.where}, which failed")
        self.ran = block.number
        reason = _why_skipped(block)
        if reason:
            pytest.skip(reason)
        try:
            self._run(block)
        except Exception as error:
            self.failed = block
            raise AssertionError(
                f"{block.where}: {type(error).__name__}: {error}"
            ) from error

    def _run(self, block):
        if _why_skipped(block):
            return
        if block.own_process:
            _run_in_own_process(block, self.workdir)
            return
        # A block may set environment variables for a reader's fresh process
        # (`KERAS_BACKEND`); they must not leak into the rest of the suite.
        environ = dict(os.environ)
        try:
            doc_blocks.run(block, self.namespace)
        finally:
            os.environ.clear()
            os.environ.update(environ)


def _why_skipped(block):
    if block.not_runnable:
        return f"not runnable: {block.not_runnable}"
    if block.backends and BACKEND not in block.backends:
        return f"runs on {', '.join(block.backends)}, running {BACKEND}"
    return None


def _run_in_own_process(block, workdir):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, doc_blocks.__file__, block.path, str(block.number)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise RuntimeError(
            f"its own process exited with {result.returncode}:\n{result.stderr[-3000:]}"
        )


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    made = {}

    def notebook(document):
        if document not in made:
            workdir = tmp_path_factory.mktemp(pathlib.Path(document).stem)
            made[document] = _Notebook(PARSED[document][0], workdir)
        return made[document]

    return notebook


def test_markers_are_well_formed():
    problems = [p for _, found in PARSED.values() for p in found]
    problems += [p for block in BLOCKS for p in block.problems]
    assert not problems, "\n".join(problems)


def test_every_document_has_its_python_blocks_collected():
    # Guards the collector itself: a change in fence syntax must not make
    # the test below silently run nothing.
    assert {b.document for b in BLOCKS} >= {"README.md", "docs/recipes.md"}
    assert all(b.code.strip() for b in BLOCKS), [b.where for b in BLOCKS if not b.code.strip()]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.document}:{b.number}@L{b.line}")
def test_block_runs(block, notebooks, monkeypatch):
    if block.problems:
        pytest.fail("\n".join(block.problems), pytrace=False)
    notebook = notebooks(block.document)
    monkeypatch.chdir(notebook.workdir)
    notebook.run_through(block)


# The harness itself: markers, checks and failure reports.

_SAMPLE = '''# Title

```python
a = 1
```

<!-- not runnable: needs two hosts -->
```python
launch()
```

<!-- runs on: tensorflow, jax -->
<!-- own process: sets up devices first -->
```python
b = a + 1
```
'''


def test_parser_numbers_blocks_and_reads_their_markers():
    blocks, problems = doc_blocks.parse(_SAMPLE, "sample.md")
    assert problems == []
    assert [(b.number, b.line, b.code) for b in blocks] == [
        (1, 3, "a = 1\n"), (2, 8, "launch()\n"), (3, 14, "b = a + 1\n")]
    assert blocks[1].not_runnable == "needs two hosts"
    assert blocks[2].backends == ("tensorflow", "jax")
    assert blocks[2].own_process == "sets up devices first"
    assert blocks[0].not_runnable is None and blocks[0].backends is None


@pytest.mark.parametrize("marker, problem", [
    ("<!-- not runnable -->", "needs a reason"),
    ("<!-- not runnable:   -->", "needs a reason"),
    ("<!-- runs on: tensorflw -->", "unknown backends ['tensorflw']"),
    ("<!-- skip this -->", "unknown marker"),
])
def test_a_malformed_marker_is_reported_with_its_block(marker, problem):
    blocks, _ = doc_blocks.parse(f"text\n{marker}\n```python\npass\n```\n", "m.md")
    (reported,) = blocks[0].problems
    assert reported.startswith("m.md, block 1 (line 3): ") and problem in reported


def test_a_marker_away_from_a_python_fence_is_reported():
    text = "<!-- not-runnable: typo -->\n\n```python\npass\n```\n<!-- not runnable: x -->\n```bash\nls\n```\n"
    blocks, problems = doc_blocks.parse(text, "m.md")
    assert blocks[0].not_runnable is None
    assert [p.split(":")[0] for p in problems] == ["m.md, line 1", "m.md, line 6"]


def test_a_literal_comment_is_checked_and_prose_is_not():
    def block(code):
        return doc_blocks.parse(f"```python\n{code}\n```\n", "m.md")[0][0]

    doc_blocks.run(block("print(0.1 + 0.2)  # 0.3\nprint(1)  # the count\n(1, 2)  # (1, 2)"), {})
    with pytest.raises(AssertionError, match=r"line 2 shows `# 1.1`, but the code gives 1.0"):
        doc_blocks.run(block("print(1.0)  # 1.1"), {})
    with pytest.raises(AssertionError, match=r"shows `# \[1, 2\]`, but the code gives \(1, 2\)"):
        doc_blocks.run(block("(1, 2)  # [1, 2]"), {})


def test_printed_text_under_its_marker_is_compared():
    text = "```python\nprint('a')\nprint('b')\n```\n<!-- printed by: print('b') -->\n```\n{}\n```\n"
    ok, _ = doc_blocks.parse(text.format("b"), "m.md")
    doc_blocks.run(ok[0], {})
    wrong, _ = doc_blocks.parse(text.format("c"), "m.md")
    with pytest.raises(AssertionError, match="the text at line 6 is not what `print\\('b'\\)` printed"):
        doc_blocks.run(wrong[0], {})


def test_a_failing_block_reports_document_block_and_line(tmp_path):
    path = tmp_path / "m.md"
    path.write_text("```python\nx = 1\n```\n\ntext\n```python\ny = x\nz = missing\n```\n")
    blocks, _ = doc_blocks.parse(path.read_text(), "m.md", str(path))
    notebook = _Notebook(blocks, tmp_path)
    with pytest.raises(AssertionError, match=r"^m.md, block 2 \(line 6\): NameError") as failure:
        notebook.run_through(blocks[1])
    # The traceback points at the document's own line.
    frame = failure.value.__cause__.__traceback__
    while frame.tb_next:
        frame = frame.tb_next
    assert (frame.tb_frame.f_code.co_filename, frame.tb_lineno) == (str(path), 8)
