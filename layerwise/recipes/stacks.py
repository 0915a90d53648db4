"""Stacks: the repeated blocks of a model, wherever they sit.

A *stack* is a list of sibling layers that repeat one block: two or more
sublayers of one class named `<prefix>_<i>` with contiguous indices from 0
or 1 (`transformer_layer_0`, ..., keras-hub's `transformer_block_1`, ...),
or one block-like layer called at several depths (ALBERT's shared
transformer layer). `tower(layer)` reads a layer or model as a `Tower`:
what comes before its stacks, one block per repeated block, what comes
after. It recurses, so it finds stacks

- inside nested layers (ViT's `vit_encoder/transformer_block_<i>`);
- inside the members of another stack (Swin's `stage_<s>/blocks_<b>`):
  hierarchical, one block per inner block; the layers a stage keeps after
  its blocks (Swin's `downsample`) open the next stage's first block, where
  timm puts them;
- side by side: sibling stacks of one model (T5, BART, Whisper: encoder and
  decoder) are stacked, the second above the first, unless `parallel`;
  stacks in separate sublayers (CLIP's and SigLIP's towers, PaliGemma's
  vision tower beside its decoder) are towers, always parallel: aligned at
  their tops, so each decays from its own top.

Every other layer joins the stack it belongs to by the model's graph
(tracking order in a layer without a graph): a layer that feeds a stack and
follows none opens that stack's first block (embeddings); a layer that
follows a stack closes it (a final norm), or, between two of its blocks,
opens the next one; a layer that feeds no stack goes to the top (the head).
A layer without a graph gives only the order its sublayers were created
in: there a normalization created before the stack is taken for the final
norm (keras-hub creates it first in PaliGemma's vision encoder).
"""

import dataclasses
import re
import warnings

import keras

from layerwise._internals import layers as internal_layers
from layerwise._internals import models as internal_models
from layerwise.recipes import residual_units
from layerwise.recipes import roles as roles_lib

# A repeated block named with an index, e.g. keras-hub's `transformer_layer_3`.
_INDEXED_NAME = re.compile(r"(.+)_(\d+)")


@dataclasses.dataclass
class Tower:
    """A stack read as blocks.

    Attributes:
        before: Layers below the first repeated block (embeddings).
        members: One list of layers per repeated block, input side first.
        after: Layers above the last repeated block (final norm, head).
    """

    before: list
    members: list
    after: list

    def blocks(self):
        """`before`, each member and `after` as one list of blocks, empty
        ones left out."""
        return [b for b in [self.before, *self.members, self.after] if b]


def _block_like(layer):
    """Whether `layer` is a block: a layer built of sublayers with weights
    (a transformer layer, a stage), not a single `Dense` or norm."""
    return any(residual_units.trainable(sub) or internal_layers.sublayers(sub)
               for sub in internal_layers.sublayers(layer))


def families(layers, blocks_only=True):
    """Runs of >= 2 siblings of one class named `<prefix>_<i>`, contiguous
    from 0 or 1, each sorted by index; with `blocks_only`, block-like ones
    only.

    From 1 only if no sibling is named `<prefix>` itself: Keras' automatic
    names (`dense`, `dense_1`, `dense_2`) are no stack.
    """
    names = {layer.name for layer in layers}
    families = {}
    for layer in layers:
        match = _INDEXED_NAME.fullmatch(layer.name)
        if match and (not blocks_only or _block_like(layer)):
            key = (match.group(1), type(layer))
            families.setdefault(key, []).append((int(match.group(2)), layer))
    found = []
    for (prefix, _), members in families.items():
        members.sort(key=lambda item: item[0])
        indices = [i for i, _ in members]
        start = indices[0]
        from_one = start == 1 and prefix not in names
        if len(members) >= 2 and (start == 0 or from_one) and indices == list(
            range(start, start + len(members))
        ):
            found.append([layer for _, layer in members])
    return found


def _children(layer):
    """`layer`'s direct sublayers, in graph order for a Functional model
    (with each one's call positions), tracking order otherwise."""
    graph = internal_models.functional_graph(layer) if isinstance(layer, keras.Model) else None
    if graph is None:
        children = internal_layers.sublayers(layer)
        return children, None
    order, calls = [], {}
    for position, node in enumerate(graph):
        op = node.operation
        if isinstance(op, keras.layers.Layer) and not node.is_input:
            if id(op) not in calls:
                order.append(op)
            calls.setdefault(id(op), []).append(position)
    return order, (graph, calls)


def _ancestors(graph):
    """Per node, the set of its ancestors' positions as an int bitmask."""
    masks = []
    for node in graph:
        mask = 0
        for parent in node.parents:
            mask |= masks[parent] | (1 << parent)
        masks.append(mask)
    return masks


def _shared(children, calls, owner):
    """Block-like children called more than once, with a warning naming
    them: their weights are one block whatever the depth. (A tied
    embedding, called as input and output layer, is no such block.)"""
    shared = [c for c in children if calls and len(calls[id(c)]) > 1
              and residual_units.trainable(c) and _block_like(c)]
    if shared:
        names = ", ".join(f"{c.name!r} ({len(calls[id(c)])} calls)" for c in shared)
        warnings.warn(
            f"Layer-wise depth cannot be separated inside shared layers of "
            f"{owner.name!r}: {names} reuse the same weights at several "
            "depths, so each is one block with one learning rate (ALBERT "
            "shares its transformer layer this way). Pass `blocks=` to group "
            "them otherwise.",
            stacklevel=5,
        )
    return shared


def tower(layer, parallel=False):
    """`layer` read as a `Tower`, or `None` if it holds no stack.

    Args:
        layer: A layer or model.
        parallel: Whether sibling stacks (an encoder and a decoder) decay
            each from its own top instead of one above the other.

    Returns:
        A `Tower`, or `None`.

    Example:

    >>> from layerwise.recipes.stacks import tower
    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dense = keras.layers.Dense(4, name="dense")
    ...     def call(self, x):
    ...         return x + self.dense(x)
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(4, name="embed")(inputs)
    >>> for i in range(2):
    ...     x = Block(name=f"layer_{i}")(x)
    >>> x = keras.layers.LayerNormalization(name="final_norm")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    >>> [[layer.name for layer in block] for block in tower(model).blocks()]
    [['embed'], ['layer_0'], ['layer_1'], ['final_norm', 'head']]
    """
    children, graph = _children(layer)
    calls = graph[1] if graph else None
    stacks = []  # (elements, Tower, is_tower)
    taken = set()
    for family in families(children):
        stacks.append((family, _hierarchical(family, parallel), False))
        taken.update(id(m) for m in family)
    for child in _shared(children, calls, layer):
        if id(child) not in taken:
            stacks.append(([child], Tower([], [[child]], []), False))
            taken.add(id(child))
    for child in children:
        if id(child) not in taken:
            sub = tower(child, parallel)
            if sub is not None:
                stacks.append(([child], sub, True))
                taken.add(id(child))
    if not stacks:
        return None
    position = _positions(children, graph, taken)
    stacks.sort(key=lambda s: min(min(position[id(e)]) for e in s[0]))
    rest = [c for c in children if id(c) not in taken and residual_units.trainable(c)]
    top = _place(rest, stacks, position, graph)
    towers = [t for _, t, _ in stacks]
    if len(towers) == 1:
        only = towers[0]
        return Tower(only.before, only.members, only.after + top)
    if parallel or any(is_tower for _, _, is_tower in stacks):
        return _aligned(towers, top)
    return _stacked(towers, top)


def _positions(children, graph, elements):
    """Each child's call positions; without a graph, its tracking position,
    except that a normalization tracked before every stack counts as last:
    keras-hub layers without a graph (PaliGemma's vision encoder) create
    their final norm first, and a stack's input side is its embedding."""
    if graph is not None:
        return {id(c): graph[1][id(c)] for c in children}
    first = min(i for i, c in enumerate(children) if id(c) in elements)
    return {
        id(c): [len(children) if i < first and roles_lib.is_normalization(c) else i]
        for i, c in enumerate(children)
    }


def _place(rest, stacks, position, graph):
    """Adds each layer of `rest` to the stack it belongs to (see the module
    docstring); returns those that go to the top."""
    if graph is not None:
        masks = _ancestors(graph[0])

        def upstream(a, b):  # a call of `a` feeds a call of `b`
            return any(masks[j] >> i & 1 for i in position[id(a)] for j in position[id(b)])
    else:

        def upstream(a, b):
            return min(position[id(a)]) < min(position[id(b)])

    top = []
    for layer in rest:
        ups = [s for s in stacks if any(upstream(e, layer) for e in s[0])]
        downs = [s for s in stacks if any(upstream(layer, e) for e in s[0])]
        between = [s for s in ups if s in downs]
        if between:
            elements, tower_, _ = between[0]
            later = [i for i, e in enumerate(elements) if upstream(layer, e)]
            index = later[0] if len(tower_.members) == len(elements) else 0
            tower_.members[index].insert(0, layer)
        elif downs and not ups:
            downs[0][1].before.append(layer)
        elif ups:
            ups[-1][1].after.append(layer)
        else:
            top.append(layer)
    return top


def _hierarchical(family, parallel):
    """One block per member, or per inner block of members that hold
    stacks themselves (Swin's stages): what a member keeps after its inner
    blocks opens the next member's first block (timm's place for Swin's
    patch merging)."""
    members, carry = [], []
    for member in family:
        inner = tower(member, parallel)
        if inner is None or not inner.members:
            members.append(carry + [member])
            carry = []
            continue
        first, *others = inner.members
        members.append(carry + inner.before + first)
        members.extend(others)
        carry = list(inner.after)
    return Tower([], members, carry)


def _stacked(towers, top):
    """Each stack above the previous one; what closes a stack and what
    opens the next share one block."""
    members = list(towers[0].members)
    for below, above in zip(towers, towers[1:]):
        bridge = below.after + above.before
        members.extend(([bridge] if bridge else []) + above.members)
    return Tower(towers[0].before, members, towers[-1].after + top)


def _aligned(towers, top):
    """Towers side by side, aligned at their tops: block `k` from the top
    holds each tower's block `k` from its top."""
    columns = [t.blocks() for t in towers]
    height = max(len(c) for c in columns)
    merged = [[] for _ in range(height)]
    for column in columns:
        for k, block in enumerate(column):
            merged[height - len(column) + k].extend(block)
    if height == 1:
        return Tower([], [], merged[0] + top)
    return Tower(merged[0], merged[1:-1], merged[-1] + top)
