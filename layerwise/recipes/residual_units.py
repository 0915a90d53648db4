"""Blocks of a Functional model built of residual units, as a person names them.

`detect_blocks` uses this for Functional models whose graph has at least one
residual unit; other models keep one block per layer (see `blocks.py`).

Structure first:

1. A *cut point* is a call that every path from the inputs to the outputs
   goes through. Between two consecutive cut points lies a fork-join: the
   calls strictly between them plus the closing merge.
2. A fork-join closed by a sum or a concatenation (`Add`, `x + y`,
   `Concatenate`, ...) is a *residual unit*, whatever it contains: a
   bottleneck with a projection shortcut, an inverted residual with its
   squeeze-excite gate, an inception module. One closed by a product
   (`Multiply`, `x * y`) is a *gate* (squeeze-excite, GLU): it belongs to
   the block it follows, like parameter-free and normalization layers.
3. Every other cut point with trainable variables (a convolution on the
   main path, a nested model) starts a new piece.

Names break the ties the graph cannot: an inverted residual without a skip
connection (stride 2, channel change) is a plain chain of convolutions. The
layer names of the residual units teach the model's naming scheme: the
common prefix of each unit's layer names (`conv2_block1_`, `block2b_`,
`expanded_conv_4_`) generalizes to a pattern (`block` + digits and letters
+ `_`); consecutive pieces with the same prefix form one block (the
expand, depthwise and project convolutions of `block2a_`; a transformer
layer's attention and MLP units), and a prefix without its index
(`expanded_conv_`) stands for the unindexed first member, Keras' naming
convention. Pieces before the first block form one stem block, pieces
after the last one one head block (timm's grouping); an unnamed piece
between two blocks is a block of its own.
"""

import dataclasses
import os
import re

import keras

from layerwise._internals import models as internal_models

_SEPARATORS = "_/.-"
_TOKENS = re.compile(r"\d+|[A-Za-z]+|[^A-Za-z\d]")


# Normalization layers belong to the block they follow, like parameter-free
# layers: a convolution and its batch norm are one piece.
_NORMALIZATIONS = (
    keras.layers.BatchNormalization,
    keras.layers.GroupNormalization,
    keras.layers.LayerNormalization,
    keras.layers.RMSNormalization,
    keras.layers.UnitNormalization,
)


def trainable(operation):
    """Whether `operation` is a layer with trainable variables."""
    return isinstance(operation, keras.layers.Layer) and bool(operation.trainable_variables)


@dataclasses.dataclass
class _Piece:
    kind: str  # "unit", "layer" or "model"
    operations: list
    key: str = None

    def __post_init__(self):
        # What the piece is named after: its own layers, not the ones
        # attached to it later (a final norm after the last unit).
        self.names = [op.name for op in self.operations if trainable(op)]


def _cut_points(graph):
    """`cut[i]`: every input-to-output path goes through node `i`.

    In a topological order, node `i` is avoided by some path exactly when an
    edge jumps over its position (an input counts as an edge from a virtual
    source, an output as one to a virtual sink).
    """
    n = len(graph)
    jumps = [0] * (n + 2)

    def jump(a, b):  # positions strictly between a and b
        if b - a > 1:
            jumps[a + 2] += 1
            jumps[b + 1] -= 1

    for i, node in enumerate(graph):
        for parent in node.parents:
            jump(parent, i)
        if node.is_input:
            jump(-1, i)
        if node.is_output:
            jump(i, n)
    cut, covered = [], 0
    for i in range(n):
        covered += jumps[i + 1]
        cut.append(covered == 0)
    return cut


def _pieces(graph):
    """The graph as pieces, input side first; attached calls join the piece
    before them (or, at the very start, the first piece)."""
    cut = _cut_points(graph)
    pieces, leading, span = [], [], []

    def attach(operations):
        (pieces[-1].operations if pieces else leading).extend(operations)

    for i, node in enumerate(graph):
        if not cut[i]:
            span.append(node.operation)
            continue
        if span:
            merged = span + [node.operation]
            span = []
            if internal_models.is_product(node.operation) or not any(map(trainable, merged)):
                attach(merged)
            else:
                pieces.append(_Piece("unit", merged))
            continue
        operation = node.operation
        if isinstance(operation, keras.Model) and trainable(operation):
            pieces.append(_Piece("model", [operation]))
        elif trainable(operation) and not isinstance(operation, _NORMALIZATIONS):
            pieces.append(_Piece("layer", [operation]))
        else:
            attach([operation])
    if span:  # several outputs: what follows the last cut point
        if any(map(trainable, span)):
            pieces.append(_Piece("unit", span))
        else:
            attach(span)
    if pieces:
        pieces[0].operations[:0] = leading
    return pieces


def _unit_prefix(piece):
    """The common prefix of a unit's layer names, up to a separator."""
    names = piece.names
    if len(names) < 2:
        return None
    prefix = os.path.commonprefix(names)
    while prefix and prefix[-1] not in _SEPARATORS:
        prefix = prefix[:-1]
    return prefix or None


def _generalize(text):
    return "".join(
        r"\d+" if token.isdigit() else "[A-Za-z]+" if token.isalpha() else re.escape(token)
        for token in _TOKENS.findall(text)
    )


def _naming_scheme(prefixes):
    """A function `name -> block prefix or None` learnt from the units'
    prefixes, or `None` when the names do not tell the units apart."""
    if len(set(prefixes)) < 2:
        return None
    token_lists = [_TOKENS.findall(p) for p in prefixes]
    stem = []
    for tokens in zip(*token_lists):
        if len(set(tokens)) > 1 or tokens[0].isdigit():
            break
        stem.append(tokens[0])
    stem = "".join(stem)
    if not stem:
        return None
    # The unindexed member (`expanded_conv_` among `expanded_conv_<i>_`)
    # adds no index pattern.
    middles = sorted({_generalize(p[len(stem):]) for p in prefixes if len(p) > len(stem)})
    indexed = re.compile(re.escape(stem) + "(?:" + "|".join(middles) + ")")
    unindexed = stem if stem[-1] in _SEPARATORS else None

    def key(name):
        match = indexed.match(name)
        if match:
            return match.group(0)
        return unindexed if unindexed and name.startswith(unindexed) else None

    return key


def residual_blocks(graph):
    """Splits a Functional graph into blocks of operations (layers and
    `keras.ops` calls), input side first.

    Args:
        graph: The model's `functional_graph`.

    Returns:
        A list of blocks, each a list of operations, or `None` if the graph
        has no residual unit (then the caller keeps its per-layer blocks).
    """
    pieces = _pieces(graph)
    units = [p for p in pieces if p.kind == "unit"]
    if not units:
        return None
    scheme = _naming_scheme([p for p in map(_unit_prefix, units) if p])
    for piece in pieces:
        if piece.kind == "unit":
            prefix = _unit_prefix(piece)
            piece.key = scheme(prefix) if scheme and prefix else None
        elif piece.kind == "layer" and scheme:
            piece.key = scheme(piece.names[0])
    groups = []  # [anchor, key, operations]
    for piece in pieces:
        if piece.key is not None and groups and groups[-1][1] == piece.key:
            groups[-1][2].extend(piece.operations)
        else:
            anchor = piece.kind != "layer" or piece.key is not None
            groups.append([anchor, piece.key, list(piece.operations)])
    anchors = [i for i, group in enumerate(groups) if group[0]]
    first, last = anchors[0], anchors[-1]
    stem = [op for group in groups[:first] for op in group[2]]
    head = [op for group in groups[last + 1:] for op in group[2]]
    middle = [group[2] for group in groups[first:last + 1]]
    return [b for b in [stem] if b] + middle + [b for b in [head] if b]
