"""`detect_blocks`: a model as an ordered list of blocks, input side first.

The blocks are what `layer_decay` and `discriminative` give one learning
rate each. Three kinds of models, three signals:

- stacks of repeated blocks wherever they sit (keras-hub backbones and
  tasks: flat, nested, hierarchical, encoder-decoder, multi-tower, shared;
  `stacks.py`): one block each, plus the embeddings before and the final
  norm and head after;
- Functional models built of residual units (ResNet, MobileNet, EfficientNet,
  functional transformers): one block per residual unit, found from the
  graph, names breaking ties (`residual_units.py`);
- everything else: one block per layer (Sequential order, Functional depth,
  or tracking order for subclassed models).
"""

import keras

from layerwise import _validation
from layerwise._internals import models as internal_models
from layerwise.recipes import residual_units
from layerwise.recipes import stacks as stacks_lib

_ENCODER_DECODER = ("stacked", "parallel")


# ----------------------------------------------------------------------
# One block per layer.


def _layer_groups(model):
    """A model's direct sublayers as groups, input side first.

    `Sequential`: its layer order. Functional: one group per topological
    depth. Other models: tracking order, indexed siblings sorted by index.
    """
    layers = list(model.layers)
    if isinstance(model, keras.Sequential):
        return [[layer] for layer in layers]
    depths = internal_models.functional_depths(model)
    if depths is not None:
        by_depth = {}
        for layer in layers:
            by_depth.setdefault(depths[id(layer)], []).append(layer)
        return [by_depth[d] for d in sorted(by_depth, reverse=True)]
    # Indexed siblings (`layer_<i>`) in index order, whatever their tracking.
    runs = stacks_lib.families(layers, blocks_only=False)
    slots = {}
    for run in runs:
        slot = iter(run)
        slots.update({id(layer): slot for layer in run})
    return [[next(slots[id(layer)]) if id(layer) in slots else layer] for layer in layers]


def _units(model):
    """`model`'s blocks of trainable layers, nested models expanded in
    place."""
    groups = None
    graph = internal_models.functional_graph(model)
    if graph is not None:
        groups = residual_units.residual_blocks(graph)
    if groups is None:
        groups = _layer_groups(model)
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    # A layer called at several places belongs to its first block only: two
    # rules on one variable would multiply their scales.
    units, seen = [], set()
    for group in groups:
        block = []
        for op in group:
            if residual_units.trainable(op) and id(op) not in seen:
                seen.add(id(op))
                block.append(op)
        block.sort(key=lambda layer: order.get(id(layer), len(order)))
        if len(block) == 1 and isinstance(block[0], keras.Model):
            units.extend(_units(block[0]))
        elif block:
            units.append(block)
    return units


def detect_blocks(model, *, encoder_decoder="stacked"):
    """Splits a model into ordered blocks of layers, input side first.

    Each block is a list of layers; layers without trainable variables are
    left out. Which layers form a block:

    - Stacks of repeated blocks (keras-hub backbones and tasks): two or
      more sibling layers of one class, each built of sublayers, named
      `<prefix>_<i>` with contiguous indices from 0 or 1
      (`transformer_layer_0`, ViT's `transformer_block_1`), or one such
      layer called at several depths (ALBERT: a `UserWarning` names it,
      since depth cannot be separated there). Each repeated block is one
      block; what feeds the stack forms a single first block (embeddings),
      what follows it a single last block (final norm and head). Stacks
      are found inside nested layers (ViT's `vit_encoder`), inside the
      members of a stack (Swin's stages: one block per Swin block, a
      stage's patch merging with the next stage's first block, as in
      timm), side by side in one model (an encoder and a decoder: stacked,
      the decoder above, unless `encoder_decoder="parallel"`) and in
      separate sublayers (CLIP's towers, PaliGemma's vision tower beside
      its decoder: aligned at their tops, each decaying from its own top).
      A task's head joins the backbone's last block.
    - A Functional model with residual units (ResNet, MobileNetV2/V3,
      EfficientNet, a functional pre-norm transformer): one block per
      residual unit, i.e. the layers between two points every input-output
      path goes through, closed by a sum or concatenation. A fork-join
      closed by a product (squeeze-excite) stays inside its block;
      parameter-free and normalization layers belong to the block they
      follow. The units' layer names resolve what the graph cannot
      (inverted residuals without a skip connection): consecutive pieces
      named with the same unit prefix (`block2a_`, `expanded_conv_3_`) are
      one block. Everything before the first block is one stem block,
      everything after the last one a head block (timm's grouping). So
      `ResNet50` gives stem, 16 bottlenecks, head; `MobileNetV3Small` and
      `EfficientNetB0` one block per inverted residual between stem and
      head.
    - Otherwise one block per layer: a `Sequential` model's layers in
      order; a Functional model's layers by topological depth (Keras' own,
      so parallel layers at one depth share a block); a subclassed model's
      sublayers in tracking order.

    Nested models are expanded in place, recursively.

    Args:
        model: A built `keras.Model`.
        encoder_decoder: How two sibling stacks of one model (an encoder
            and a decoder) are ordered: `"stacked"` (default), the second
            one's blocks above the first one's, the first one's final norm
            and the second one's embeddings sharing a block between them;
            or `"parallel"`, each decaying from its own top (block `k` from
            the top holds both stacks' blocks `k` from their tops).

    Returns:
        A list of blocks, each a list of `keras.layers.Layer`; it is a valid
        `blocks` argument of `layer_decay` and `discriminative`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, name="d1"),
    ...     keras.layers.Dropout(0.1, name="drop"),
    ...     keras.layers.Dense(8, name="d2"),
    ...     keras.layers.Dense(2, name="head")])
    >>> [[layer.name for layer in block] for block in lw.detect_blocks(model)]
    [['d1'], ['d2'], ['head']]
    """
    if encoder_decoder not in _ENCODER_DECODER:
        raise ValueError(
            f"`encoder_decoder` must be one of {_ENCODER_DECODER}. Received: "
            f"encoder_decoder={encoder_decoder!r}"
        )
    _validation.check_model(model)
    tower = stacks_lib.tower(model, parallel=encoder_decoder == "parallel")
    if tower is None:
        return _units(model)
    # A layer in two places (a tied embedding, also the output layer) stays
    # in its first block: two rules on one variable would multiply.
    blocks, seen = [], set()
    for block in tower.blocks():
        kept = []
        for layer in block:
            if residual_units.trainable(layer) and id(layer) not in seen:
                seen.add(id(layer))
                kept.append(layer)
        if kept:
            blocks.append(kept)
    return blocks
