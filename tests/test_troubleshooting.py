"""docs/troubleshooting.md lists every error message and warning a user can
meet: each `raise` and `warnings.warn` of the package (the demo and Keras'
own messages kept in `_internals` aside) has its opening words on the page.

A message is known by its longest literal part (the text between the
f-string's fields), cut to its first sentence before "Received" and
trimmed of punctuation at its ends: the page must contain its first words. A message built by a helper function
(`raise _mismatch(...)`) is read from that helper's string literals.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "troubleshooting.md"
WORDS = 6  # opening words of a message that the page must contain
SKIPPED = ("layerwise/demo/", "layerwise/_internals/")


def _literal_parts(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    return []


def _strings_in(node):
    parts = []
    for child in ast.walk(node):
        if isinstance(child, ast.JoinedStr):
            parts += _literal_parts(child)
        elif isinstance(child, ast.Constant) and isinstance(child.value, str):
            parts.append(child.value)
    return parts


def _key(parts):
    """The opening words of the longest literal part, or None for a message
    with no prose (`NotImplementedError`, a re-raise)."""
    texts = [" ".join(p.split()) for p in parts]
    longest = max(texts, key=len, default="")
    # Its first sentence, without the user's value that "Received" shows.
    first = re.split(r"(?<=\.) |Received", longest)[0]
    if len(first.split()) >= 3:
        longest = first
    longest = re.sub(r"^[^\w(]+|[^\w)]+$", "", longest)
    words = longest.split()
    return " ".join(words[:WORDS]) if len(words) >= 3 else None


def messages(root=ROOT):
    """{key: [where, ...]} of every message the package can raise or warn."""
    found = {}
    for path in sorted((root / "layerwise").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(SKIPPED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        helpers = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        for node in ast.walk(tree):
            call = None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call = node.exc
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "warn"):
                call = node
            if call is None:
                continue
            if isinstance(call.func, ast.Name) and call.func.id in helpers:
                parts = _strings_in(helpers[call.func.id])  # raise _mismatch(...)
            else:
                parts = [p for arg in call.args for p in _literal_parts(arg)]
                for arg in call.args:  # ValueError(_message(...))
                    if isinstance(arg, ast.Call) and getattr(arg.func, "id", None) in helpers:
                        parts += _strings_in(helpers[arg.func.id])
            key = _key(parts)
            if key:
                found.setdefault(key, []).append(f"{relative}:{node.lineno}")
    return found


def _normalized(text):
    return " ".join(text.split())


def test_every_message_of_the_package_is_on_the_troubleshooting_page():
    page = _normalized(PAGE.read_text(encoding="utf-8"))
    found = messages()
    assert len(found) > 100  # the collector still sees the package's messages
    missing = {key: where for key, where in found.items() if key not in page}
    assert not missing, (
        "docs/troubleshooting.md lacks these messages (add a row with the "
        "message's opening words, its cause and its fix):\n"
        + "\n".join(f"  {key!r}  ({', '.join(where)})" for key, where in sorted(missing.items())))


@pytest.mark.parametrize("source, key", [
    ('raise ValueError(f"`{arg}` must be a number >= 0. Received: {arg}={v!r}")',
     "must be a number >= 0"),
    ('raise ValueError("one " f"two {x} three four five six seven eight nine")',
     "three four five six seven eight"),
    ("raise NotImplementedError", None),
    ('warnings.warn(f"{n} variables are routed to Muon but updated by AdamW")',
     "variables are routed to Muon but"),
    ('raise _mismatch("x")\ndef _mismatch(a):\n    return ValueError(f"The layers of {a} differ")',
     "The layers of"),
    ('raise ValueError(_text(1))\ndef _text(a):\n    return f"{a} cannot be reported from a loop"',
     "cannot be reported from a loop"),
])
def test_a_message_is_known_by_the_opening_words_of_its_longest_literal(tmp_path, source, key):
    package = tmp_path / "layerwise"
    package.mkdir()
    (package / "module.py").write_text(source + "\n")
    assert list(messages(tmp_path)) == ([key] if key else [])
