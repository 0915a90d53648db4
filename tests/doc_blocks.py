"""Reads the fenced Python blocks of a Markdown document and runs them.

Standard library only, and no Keras import: `tests/test_docs.py` uses it in
the suite's process, and a block marked `<!-- own process: ... -->` runs
through this file as a script (`python doc_blocks.py DOCUMENT NUMBER`), in a
fresh interpreter that the block itself may configure before Keras starts.

Markers are HTML comments on the lines right above a block's opening fence:

    <!-- not runnable: <why> -->       never run; the reason is required
    <!-- runs on: tensorflow, jax -->  skipped on the other backends
    <!-- own process: <why> -->        run alone in a fresh interpreter

A top-level `print(...)` or bare expression whose trailing comment is a
Python literal (`print(w)  # 1.0`, `x.shape  # (2, 3)`) is checked: what it
prints (or its value) must equal that literal, floats to a relative 1e-6.
A fence of plain text under `<!-- printed by: opt.summary() -->` is checked
too: it must be exactly what that top-level statement of the Python block
above it printed.
"""

import ast
import contextlib
import dataclasses
import difflib
import io
import math
import re
import sys
import tokenize

BACKENDS = ("tensorflow", "jax", "torch")
PYTHON_TAGS = ("python", "py", "python3")
MARKER_KEYS = ("not runnable", "runs on", "own process")
OUTPUT_KEY = "printed by"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^[ \t]*<!--(?P<body>.*?)-->[ \t]*$")
# What a misspelt marker looks like ("not-runnable", "Runs on"): reported
# instead of being ignored, so a block cannot silently drop out of the suite.
_MARKER_LIKE = re.compile(
    r"^\s*(not[\s_-]*runnable|runs?[\s_-]*on|own[\s_-]*process|printed[\s_-]*by)\b", re.I)
_FLOAT_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced Python block: `number` counts from 1 within its document,
    `line` is the 1-based line of the opening fence."""

    document: str
    number: int
    line: int
    code: str
    not_runnable: str | None = None
    backends: tuple | None = None
    own_process: str | None = None
    problems: tuple = ()
    path: str = ""  # the file tracebacks read the lines from
    outputs: tuple = ()  # (line, expression, text) of the `printed by` fences after it

    @property
    def where(self):
        return f"{self.document}, block {self.number} (line {self.line})"


def parse(text, document, path=""):
    """The Python blocks of a Markdown text, and the problems found outside
    them (markers that belong to no Python block, unclosed fences).

    `document` names it in messages; `path`, where it lies, in tracebacks.
    """
    lines = text.splitlines()
    blocks, problems, used_markers = [], [], set()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            problems.append(f"{document}, line {i + 1}: the fence is never closed")
            break
        info = opening["info"].split()
        marker_lines = _marker_lines_above(lines, i)
        markers = [(n, _COMMENT.match(lines[n])["body"].strip()) for n in marker_lines]
        body = "\n".join(_strip_indent(line, indent) for line in lines[i + 1:end]) + "\n"
        if info and info[0].lower() in PYTHON_TAGS:
            used_markers.update(marker_lines)
            blocks.append(_block(document, len(blocks) + 1, i + 1, body, markers,
                                 path or document))
        else:
            output = _output(markers, i + 1, body)
            if output and blocks:
                used_markers.update(marker_lines)
                blocks[-1] = dataclasses.replace(blocks[-1], outputs=blocks[-1].outputs + (output,))
            elif output:
                problems.append(f"{document}, line {i + 1}: `printed by` needs a ```python "
                                "block above it, to run first")
        i = end + 1
    for n, line in enumerate(lines):
        comment = _COMMENT.match(line)
        if comment and n not in used_markers and _MARKER_LIKE.match(comment["body"]):
            problems.append(f"{document}, line {n + 1}: the marker {line.strip()!r} is not "
                            "on the lines right above a ```python fence")
    return blocks, problems


def _marker_lines_above(lines, fence_index):
    found = []
    n = fence_index - 1
    while n >= 0 and _COMMENT.match(lines[n]):
        found.append(n)
        n -= 1
    return sorted(found)


def _output(markers, line, text):
    for _, body in markers:
        key, _, expression = body.partition(":")
        if " ".join(key.lower().split()) == OUTPUT_KEY and expression.strip():
            return line, expression.strip(), text
    return None


def _strip_indent(line, indent):
    # A fence inside a list item is indented; its content carries the same
    # indentation, which is not part of the code.
    return line[len(indent):] if line.startswith(indent) else line.lstrip()


def _block(document, number, line, code, markers, path):
    where = f"{document}, block {number} (line {line})"
    fields, problems = {}, []
    for n, body in markers:
        key, _, value = body.partition(":")
        key, value = " ".join(key.lower().split()), value.strip()
        if key == OUTPUT_KEY:
            problems.append(f"{where}: `printed by:` on line {n + 1} belongs above a fence "
                            "of plain text, the output to compare")
        elif key not in MARKER_KEYS:
            problems.append(f"{where}: unknown marker <!-- {body} --> on line {n + 1}; "
                            f"expected one of {', '.join(MARKER_KEYS)}")
        elif not value:
            problems.append(f"{where}: the marker `{key}:` on line {n + 1} needs a "
                            f"{'list of backends' if key == 'runs on' else 'reason'}")
        elif key == "runs on":
            names = tuple(name.strip() for name in value.split(","))
            unknown = [name for name in names if name not in BACKENDS]
            if unknown:
                problems.append(f"{where}: `runs on:` names unknown backends {unknown}; "
                                f"known: {', '.join(BACKENDS)}")
            fields["backends"] = names
        else:
            fields[key.replace(" ", "_")] = value
    return Block(document, number, line, code, problems=tuple(problems), path=path,
                 **fields)


def run(block, namespace):
    """Executes `block` in `namespace` statement by statement, checking the
    literal comments of top-level prints and expressions.

    Tracebacks point into the Markdown file: the code is compiled under the
    document's name with its lines at their place in the document.
    """
    source = "\n" * block.line + block.code
    filename = block.path or block.document
    tree = ast.parse(source, filename)
    comments = _trailing_comments(source)
    shows = {ast.unparse(ast.parse(expression)): (line, expression, text)
             for line, expression, text in block.outputs}
    for statement in tree.body:
        shown = shows.pop(ast.unparse(statement), None)
        expected = _expected(statement, comments)
        if shown:
            _check_printed(statement, filename, namespace, *shown)
        elif expected is None:
            exec(compile(ast.Module([statement], []), filename, "exec"), namespace)
        else:
            _check_value(statement, filename, namespace, *expected)
    for line, expression, _ in shows.values():
        raise AssertionError(
            f"the text at line {line} is `printed by: {expression}`, "
            "a statement the block above does not have at its top level")


def _printed(statement, filename, namespace):
    # Runs `statement`, returning what it printed (and still showing it).
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(ast.Module([statement], []), filename, "exec"), namespace)
    sys.stdout.write(printed.getvalue())
    return printed.getvalue()


def _check_value(statement, filename, namespace, comment, expected):
    if _is_print(statement):
        actual = _literal_or_text(_printed(statement, filename, namespace).strip())
    else:
        actual = eval(compile(ast.Expression(statement.value), filename, "eval"), namespace)
    if not _equal(actual, expected):
        raise AssertionError(
            f"line {statement.end_lineno} shows `# {comment}`, but the code gives {actual!r}")


def _check_printed(statement, filename, namespace, line, expression, text):
    shown, got = _lines(text), _lines(_printed(statement, filename, namespace))
    if shown != got:
        diff = "\n".join(difflib.unified_diff(shown, got, "shown", "printed", lineterm=""))
        raise AssertionError(
            f"the text at line {line} is not what `{expression}` printed:\n{diff}")


def _lines(text):
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _trailing_comments(source):
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string[1:].strip()
    return comments


def _expected(statement, comments):
    """(comment, literal) for a checked statement, else None."""
    if not isinstance(statement, ast.Expr):
        return None
    comment = comments.get(statement.end_lineno)
    if not comment:
        return None
    try:
        return comment, ast.literal_eval(comment)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None  # prose, not an expected value


def _is_print(statement):
    call = statement.value
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "print")


def _literal_or_text(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _equal(actual, expected):
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual == expected
    if isinstance(expected, (int, float)) and _is_number(actual):
        return math.isclose(float(actual), expected, rel_tol=_FLOAT_RTOL, abs_tol=1e-12)
    if isinstance(expected, (list, tuple)):
        return (type(actual) is type(expected) and len(actual) == len(expected)
                and all(_equal(a, e) for a, e in zip(actual, expected)))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(_equal(actual[k], expected[k]) for k in expected))
    return actual == expected


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes))


def _main(argv):
    # Runs one block of a document alone: `python doc_blocks.py DOC NUMBER`.
    document, number = argv[1], int(argv[2])
    with open(document, encoding="utf-8") as f:
        blocks, _ = parse(f.read(), document, document)
    run(blocks[number - 1], {"__name__": "__main__"})


if __name__ == "__main__":
    _main(sys.argv)
