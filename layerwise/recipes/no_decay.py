"""`no_decay`: no weight decay on biases and normalization parameters.

Decoupled weight decay pulls weights towards zero. On a normalization's
scale that fights the normalization itself, and on biases and offsets it
only removes capacity, so the common practice (BERT's original optimizer;
timm's `param_groups_weight_decay`, which skips every 1-D parameter; nanoGPT)
applies decay to the weight matrices only. `no_decay` turns decay off where
the model's structure says a variable is a bias or a normalization
parameter (see `layerwise.recipes.roles`), whatever its rank (keras' attention
biases are `(heads, head_dim)`), and optionally on embeddings.
"""

from layerwise.optim import rules as rules_lib
from layerwise.optim import selectors as selectors_lib
from layerwise.recipes import roles as roles_lib


def no_decay(model, *, embeddings=False, name="no_decay"):
    """One rule with `weight_decay=0.0` for biases and normalization layers.

    Selects every trainable variable of `model` that is a bias (named `bias`
    or `*_bias`, as Keras names the additive term of every layer) or belongs
    to a normalization layer (Keras' `BatchNormalization`,
    `LayerNormalization`, `RMSNormalization`, `GroupNormalization`, and any
    layer that behaves as a normalization: see
    `layerwise.recipes.roles.is_normalization`), and with
    `embeddings=True` every variable of an embedding layer. Kernels are never
    selected. The rule selects exact variable paths, so it survives
    `model.save()` / `keras.models.load_model()`.

    Args:
        model: A built `keras.Model`.
        embeddings: Whether embeddings go without decay too.
        name: The rule's name.

    Returns:
        A `Rule`: put it after the rules that set `weight_decay`, since the
        last matching rule that sets it wins.

    Raises:
        ValueError: if no variable of `model` is selected.

    Example:

    >>> from layerwise.recipes.no_decay import no_decay
    >>> inputs = keras.Input((8,))
    >>> x = keras.layers.Dense(8, name="hidden")(inputs)
    >>> x = keras.layers.LayerNormalization(name="norm")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    >>> rule = no_decay(model)
    >>> rule.selector.paths
    ('hidden/bias', 'norm/gamma', 'norm/beta', 'head/bias')
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3, weight_decay=0.1),
    ...                             rules=[rule])
    """
    if not isinstance(embeddings, bool):
        raise TypeError(
            f"`embeddings` must be True or False. Received: embeddings={embeddings!r}"
        )
    roles = roles_lib.variable_roles(model)
    paths = [
        role.variable.path
        for role in roles
        if role.bias or role.normalization or (embeddings and role.embedding)
    ]
    if not paths:
        kinds = "bias, normalization or embedding" if embeddings else "bias or normalization"
        raise ValueError(
            f"`model` must have a {kinds} variable for `no_decay` to select. "
            f"Received: model={model.name!r} with trainable variables "
            f"{[role.variable.path for role in roles][:8]}"
        )
    label = "biases, normalizations" + (", embeddings" if embeddings else "")
    return rules_lib.Rule(
        selectors_lib.VariablePaths(paths, label=label), weight_decay=0.0, name=name
    )
