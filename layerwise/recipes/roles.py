"""Roles of a model's variables: what the recipes need to know about each.

A variable's *owners* are the layers that hold it directly (not through a
sublayer). From them and the model's graph come the roles the recipes route
by:

- **embedding**: an owner is a `keras.layers.Embedding` (keras-hub's
  `ReversibleEmbedding` included) or of a class whose name ends in
  `Embedding` (keras-hub's `PositionEmbedding`, which subclasses `Layer`);
  this is the convention of Keras' own `Muon`, which routes by the word
  "embedding" in the variable's path.
- **normalization**: the trainable variables of a normalization layer: an
  instance of Keras' `BatchNormalization`, `LayerNormalization`,
  `RMSNormalization` or `GroupNormalization`, or any other layer that
  behaves as one (see `is_normalization`).
- **bias**: a variable named `bias` or `*_bias`, the name every Keras layer
  gives its additive term (`Dense`, `EinsumDense`, convolutions, attention
  projections), whatever its rank.
- **tied**: a variable used by more than one layer: held directly by two
  layers, or held by a layer that two layers track (a layer passed to
  another one, as in weight tying).
- **output**: held by a layer that produces one of the model's outputs (see
  `output_layers`).
"""

import dataclasses

import keras
import numpy as np

from layerwise import _validation
from layerwise._internals import layers as internal_layers
from layerwise._internals import models as internal_models

_KERAS_NORMALIZATIONS = (
    keras.layers.BatchNormalization,
    keras.layers.GroupNormalization,
    keras.layers.LayerNormalization,
    keras.layers.RMSNormalization,
)

# The probe input is scaled by this factor; a normalization's output must not
# change (to this relative tolerance: the layer's epsilon breaks exact
# invariance).
_PROBE_SCALE = 8.0
_PROBE_RTOL = 1e-2


@dataclasses.dataclass(frozen=True)
class VariableRole:
    """What one trainable variable of a model is.

    Attributes:
        variable: The `keras.Variable`.
        owners: The layers holding it directly, outermost first.
        embedding: Held by an embedding layer.
        normalization: Held by a normalization layer.
        bias: Named `bias` or `*_bias`.
        tied: Used by more than one layer.
    """

    variable: object
    owners: tuple
    embedding: bool
    normalization: bool
    bias: bool
    tied: bool


def _layer_tree(model):
    """Every layer under `model` (itself included) once, depth first, and
    how many layers track each one as a direct sublayer."""
    order, parents, stack, seen = [], {}, [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        order.append(layer)
        children = internal_layers.sublayers(layer)
        for child in children:
            parents[id(child)] = parents.get(id(child), 0) + 1
        stack.extend(reversed(children))
    return order, parents


def own_variables(layer):
    """The variables `layer` holds directly, not through a sublayer."""
    inherited = {id(v) for sub in internal_layers.sublayers(layer) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inherited]


def is_embedding(layer):
    """Whether `layer` is an embedding (see the module docstring)."""
    if isinstance(layer, keras.layers.Embedding):
        return True
    return any(cls.__name__.endswith("Embedding") for cls in type(layer).__mro__)


def is_normalization(layer):
    """Whether `layer` is a normalization layer.

    Keras' normalization layers are recognized by class. Any other layer
    counts if it has the defining property of a normalization: its output
    does not change when its input is multiplied by a positive constant
    (checked once, in inference mode, on a random `(2, 3, d)` input scaled by
    8), it depends on its input, and its own trainable variables are
    vectors of one size `d` (a scale, an offset) with no weighted sublayers.
    This catches keras-hub's Gemma `RMSNormalization` and custom RMS or
    layer norms by what they compute, not by their names; a scale or bias
    layer (`x * w`, `x + b`) and `PReLU` fail it. A layer that cannot be
    called on such an input (one that needs a mask, a batch norm computing
    statistics only in training) is not recognized: select its variables
    with a rule of your own.

    Args:
        layer: A built `keras.layers.Layer`.

    Returns:
        A bool.

    Example:

    >>> from layerwise.recipes.roles import is_normalization
    >>> class RMSNorm(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.scale = self.add_weight(shape=shape[-1:], initializer="ones")
    ...     def call(self, x):
    ...         ms = keras.ops.mean(x * x, axis=-1, keepdims=True)
    ...         return x * keras.ops.rsqrt(ms + 1e-6) * self.scale
    >>> norm = RMSNorm()
    >>> norm.build((None, 4))
    >>> is_normalization(norm), is_normalization(keras.layers.Dense(4))
    (True, False)
    """
    if isinstance(layer, _KERAS_NORMALIZATIONS):
        return True
    if not layer.built:
        return False
    weights = [v for v in own_variables(layer) if v.trainable]
    shapes = {tuple(v.shape) for v in weights}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        return False
    if any(sub.weights for sub in internal_layers.sublayers(layer)):
        return False
    (size,) = shapes.pop()
    return _scale_invariant(layer, size)


def _scale_invariant(layer, size):
    rng = np.random.default_rng(0)
    x, other = (rng.normal(size=(2, 3, size)).astype("float32") for _ in range(2))
    dtype = layer.compute_dtype

    def call(value):
        out = layer(keras.ops.cast(value, dtype), training=False)
        return np.asarray(keras.ops.convert_to_numpy(out), dtype="float32")

    try:
        y, y_scaled, y_other = call(x), call(x * _PROBE_SCALE), call(other)
    except Exception:  # Any layer may be probed: one that cannot run is not a norm.
        return False
    if y.shape != y_scaled.shape or y.shape != y_other.shape or not np.all(np.isfinite(y)):
        return False
    scale = np.max(np.abs(y)) + 1e-12
    invariant = np.max(np.abs(y - y_scaled)) <= _PROBE_RTOL * scale
    depends_on_input = np.max(np.abs(y - y_other)) > _PROBE_RTOL * scale
    return bool(invariant and depends_on_input)


def is_bias(variable):
    """Whether `variable` is a bias: Keras' name for an additive term."""
    return variable.name == "bias" or variable.name.endswith("_bias")


def variable_roles(model):
    """The role of each trainable variable of `model`, in model order.

    Args:
        model: A built `keras.Model`.

    Returns:
        A list of `VariableRole`, one per `model.trainable_variables`.

    Example:

    >>> from layerwise.recipes.roles import variable_roles
    >>> inputs = keras.Input((3,), dtype="int32")
    >>> x = keras.layers.Embedding(10, 4, name="embed")(inputs)
    >>> x = keras.layers.LayerNormalization(name="norm")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    >>> for role in variable_roles(model):
    ...     print(role.variable.path, role.embedding, role.normalization, role.bias)
    embed/embeddings True False False
    norm/gamma False True False
    norm/beta False True False
    head/kernel False False False
    head/bias False False True
    """
    _validation.check_model(model)
    layers, parents = _layer_tree(model)
    owners = {}
    for layer in layers:
        for variable in own_variables(layer):
            owners.setdefault(id(variable), []).append(layer)
    roles = []
    for variable in model.trainable_variables:
        held_by = tuple(owners.get(id(variable), (model,)))
        shared_owner = any(parents.get(id(layer), 0) > 1 for layer in held_by)
        roles.append(
            VariableRole(
                variable=variable,
                owners=held_by,
                embedding=any(is_embedding(layer) for layer in held_by),
                normalization=any(is_normalization(layer) for layer in held_by),
                bias=is_bias(variable),
                tied=len(held_by) > 1 or shared_owner,
            )
        )
    return roles


def output_layers(model):
    """The layers that produce a Functional or `Sequential` model's outputs.

    From each output, the graph is walked back through the layers and
    operations without weights (activations, reshapes, dropout, `keras.ops`
    calls) to the first layers with weights; a nested Functional model is
    entered. A layer with sublayers (a transformer block) counts as a whole.

    Args:
        model: A built Functional or `Sequential` model.

    Returns:
        A list of layers, in the order of the outputs, each once; `None` if
        `model` is subclassed (it has no graph to walk).

    Example:

    >>> from layerwise.recipes.roles import output_layers
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(8, name="hidden")(inputs)
    >>> x = keras.layers.Dense(2, name="head")(x)
    >>> model = keras.Model(inputs, keras.layers.Softmax()(x))
    >>> [layer.name for layer in output_layers(model)]
    ['head']
    """
    outputs = internal_models.graph_outputs(model)
    if outputs is None:
        return None
    found, seen = [], set()

    def add(layer):
        if id(layer) not in {id(l) for l in found}:
            found.append(layer)

    stack = list(reversed(outputs))
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, inputs = internal_models.producer(tensor)
        nested = isinstance(operation, keras.Model) and operation is not model
        if nested and internal_models.graph_outputs(operation) is not None:
            for layer in output_layers(operation):
                add(layer)
        elif isinstance(operation, keras.layers.Layer) and operation.weights:
            add(operation)
        else:
            stack.extend(reversed(inputs))
    return found
