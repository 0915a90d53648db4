"""Parametrize any layer's weights: the layer computes with `fn(phi)`.

`parametrize(layer, "kernel", fn)` keeps the layer's variable as the stored,
trained value `phi` and makes the layer use `fn(phi)` wherever it reads that
weight, differentiably: the gradient reaches `phi` through `fn`. This is a
constraint *before* the computation, unlike Keras' `kernel_constraint`
(a projection after each update) or `keras.layers.SpectralNormalization`
(which assigns the normalized kernel in place).

How it works: during each call of the layer, the attributes that hold the
weight (for `Dense`, `_kernel`) are set to the tensor `fn(phi)` and restored
afterwards. The substitution happens at trace time, so it is jit-safe and
works in JAX stateless calls. The layer is changed in place, so a model that
already contains it computes with `fn(phi)` from the next call on (recompile a
model that was already trained, as after any change to its variables).

Serialization: Keras saves a layer by its class and `get_config`, so an
in-place change cannot show in the layer's own config. `parametrize` returns
a `Parametrized` wrapper; a model built by calling that wrapper records the
parametrizations in its `.keras` config and restores them on `load_model`.
The parametrizations' state (e.g. spectral norm's power-iteration vector) is
tracked by the layer itself, so it is in `layer.weights` and in checkpoints.
"""

import contextvars
import functools

import keras
from keras import ops

from layerwise._internals import layers as internals

_REGISTRY_ATTR = "_layerwise_parametrizations"

# True while a `Parametrized` wrapper serializes its layer: the one context in
# which a parametrized layer's config is complete (the wrapper records the
# parametrizations next to it).
_serializing_in_wrapper = contextvars.ContextVar(
    "layerwise_serializing_in_wrapper", default=False
)


@keras.saving.register_keras_serializable(package="layerwise")
class Parametrization(keras.layers.Layer):
    """A function of one weight: maps the stored value `phi` to the used `theta`.

    Subclasses implement `call(phi, training=None)`; they may create state in
    `build(input_shape)` (the weight's shape) and may define
    `right_inverse(theta)`, which returns a `phi` such that `call(phi)` is
    `theta`. It is used when the parametrization is registered (so the layer
    keeps computing the same function where the inverse is exact) and by
    `Parametrized.set_weights`. The default returns `theta` unchanged.
    """

    def build(self, input_shape):
        del input_shape

    def call(self, phi, training=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(phi, training=None)`."
        )

    def right_inverse(self, theta):
        return theta


@keras.saving.register_keras_serializable(package="layerwise")
class FunctionParametrization(Parametrization):
    """A stateless parametrization from a plain function `fn(phi) -> theta`.

    Args:
        fn: a callable. To save and load it, make it serializable, e.g. with
            `keras.saving.register_keras_serializable()`.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        if not callable(fn):
            raise ValueError(f"`fn` must be callable. Received: fn={fn!r}")
        self.fn = fn

    def call(self, phi, training=None):
        return self.fn(phi)

    def get_config(self):
        fn = keras.saving.serialize_keras_object(self.fn)
        return {**super().get_config(), "fn": fn}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


class _Hook:
    """The per-instance `call` of a parametrized layer, and its registry.

    `entries` lists `(weight_name, parametrization)` in registration order;
    a weight's chain is its entries in that order. `pending` holds the
    entries given before the layer was built; they register after `build`.
    """

    def __init__(self, layer):
        self.layer = layer
        self.original_call = layer.call
        self.entries = []
        self.pending = []
        self.targets = {}  # weight name -> (variable, attribute names)
        functools.update_wrapper(self, self.original_call)

    def chain(self, name):
        return [p for n, p in self.entries if n == name]

    def value(self, name, upto=None):
        """`theta` of weight `name` (the chain's first `upto` functions)."""
        variable, _ = self.targets[name]
        x = ops.convert_to_tensor(variable)
        for p in self.chain(name)[:upto]:
            x = p(x)
        return x

    def __call__(self, *args, **kwargs):
        values = {}
        for name, (_, attributes) in self.targets.items():
            theta = self.value(name)
            values.update(dict.fromkeys(attributes, theta))
        with internals.substituted(self.layer, values):
            return self.original_call(*args, **kwargs)


def _hook(layer, create=False):
    hook = internals.instance_override(layer, "call")
    if isinstance(hook, _Hook) or not create:
        return hook if isinstance(hook, _Hook) else None
    hook = _Hook(layer)
    internals.set_instance_override(layer, "call", hook)
    internals.set_instance_override(
        layer, "get_config", _guarded_get_config(layer, layer.get_config)
    )
    if not layer.built:
        original_build = layer.build

        @functools.wraps(original_build)
        def build_then_register(*args, **kwargs):
            original_build(*args, **kwargs)
            internals.set_instance_override(layer, "build", original_build)
            pending, hook.pending = hook.pending, []
            for name, p, first in pending:
                _register(layer, name, p, first)

        internals.set_instance_override(layer, "build", build_then_register)
    return hook


def _guarded_get_config(layer, original):
    """Refuses to serialize a parametrized layer outside its wrapper.

    A layer's own config cannot record its parametrizations, so a model
    saved with the bare layer would load `phi` as if it were the weight
    itself, silently. Saving fails loudly instead.
    """

    @functools.wraps(original)
    def get_config():
        if not _serializing_in_wrapper.get():
            names = sorted({n for n, _ in parametrizations(layer)})
            raise ValueError(
                f"Layer '{layer.name}' has parametrized weights {names}, "
                "which its own config cannot record: saved as it is, it "
                "would load the stored `phi` as its weights. Save a model "
                "that calls the `Parametrized` wrapper returned by "
                "`layerwise.parametrize` instead, call "
                "`layerwise.remove_parametrization` first, or use "
                "`model.save_weights()`."
            )
        return original()

    return get_config


def _resolve(layer, name):
    weights = internals.own_variables(layer)
    if not isinstance(name, str) or name not in weights:
        raise ValueError(
            f"`name` must be the name of one of the weights of layer "
            f"'{layer.name}': {sorted(weights)}. Received: name={name!r}"
        )
    variable = weights[name]
    return variable, internals.attributes_holding(layer, variable)


def _register(layer, name, parametrization, first=False):
    """Add `parametrization` to weight `name` of the built `layer`.

    When it becomes the first function of the weight's chain (`first=True`,
    or the weight had none), `phi` is set to its `right_inverse(phi)`, so an
    exact inverse leaves the function of the layer unchanged. Appended after
    other functions it leaves `phi` as it is, like `torch.nn.utils.parametrize`.
    """
    hook = _hook(layer, create=True)
    variable, attributes = _resolve(layer, name)
    if any(p is parametrization for _, p in hook.entries):
        raise ValueError(
            "`parametrization` is already registered on layer "
            f"'{layer.name}'; create one instance per weight. "
            f"Received: parametrization={parametrization!r}"
        )
    hook.targets[name] = (variable, attributes)
    chain = hook.chain(name)
    first = first or not chain
    if not parametrization.built:
        with keras.name_scope(layer.name):
            parametrization.build(tuple(variable.shape))
    x = ops.convert_to_tensor(variable) if first else hook.value(name)
    theta = parametrization(x)
    if tuple(theta.shape) != tuple(variable.shape):
        raise ValueError(
            f"A parametrization must keep the weight's shape. Weight "
            f"'{name}' of layer '{layer.name}' has shape "
            f"{tuple(variable.shape)}; {parametrization.name} returned "
            f"shape {tuple(theta.shape)}."
        )
    if first:
        variable.assign(parametrization.right_inverse(x))
        index = next(
            (i for i, (n, _) in enumerate(hook.entries) if n == name),
            len(hook.entries),
        )
    else:
        index = len(hook.entries)
    hook.entries.insert(index, (name, parametrization))
    _sync_tracking(layer, hook)


def _sync_tracking(layer, hook):
    """Track the registered parametrizations as sublayers of `layer`."""
    with internals.unlocked(layer):
        setattr(layer, _REGISTRY_ATTR, [p for _, p in hook.entries])


def parametrize(layer, name, fn):
    """Make `layer` use `fn(phi)` wherever it uses its weight `name`.

    The weight's variable keeps the stored value `phi`; the gradient flows
    through `fn` to it. `layer` is changed in place: any model that calls it
    uses `fn(phi)` from then on. Parametrizations chain: a second one on the
    same weight is applied to the output of the first. If `layer` is not built
    yet, they are registered when it is built.

    Args:
        layer: a `keras.layers.Layer`, or a `Parametrized` wrapper.
        name: the name of one of the layer's own weights, e.g. `"kernel"`.
        fn: a `Parametrization` (e.g. `spectral_norm()`) or a function of
            one tensor returning a tensor of the same shape.

    Returns:
        A `Parametrized` wrapper around `layer`. Call it, rather than `layer`,
        in a model you want to save as a `.keras` file.

    Example:

    >>> dense = keras.layers.Dense(3)
    >>> dense.build((None, 4))
    >>> wrapped = parametrize(dense, "kernel", keras.ops.tanh)
    >>> y = dense(np.ones((2, 4)))  # computes with tanh(kernel)
    """
    if isinstance(layer, Parametrized):
        wrapper, layer = layer, layer.layer
    elif isinstance(layer, keras.layers.Layer):
        wrapper = None
    else:
        raise ValueError(
            f"`layer` must be a `keras.layers.Layer`. Received: layer={layer!r}"
        )
    _add(layer, name, fn)
    return wrapper if wrapper is not None else Parametrized(layer)


def _add(layer, name, fn, first=False):
    if not isinstance(fn, Parametrization):
        fn = FunctionParametrization(fn)
    if layer.built:
        _register(layer, name, fn, first)
    else:
        _hook(layer, create=True).pending.append((name, fn, first))


def is_parametrized(layer, name=None):
    """Whether `layer` (or its weight `name`) has parametrizations."""
    hook = _hook(layer)
    if hook is None:
        return False
    names = {n for n, _ in hook.entries + [e[:2] for e in hook.pending]}
    return bool(names) if name is None else name in names


def parametrizations(layer):
    """`(weight_name, parametrization)` pairs of `layer`, in order."""
    hook = _hook(layer)
    if hook is None:
        return []
    return list(hook.entries) + [(n, p) for n, p, _ in hook.pending]


def remove_parametrization(layer, name):
    """Remove the parametrizations of weight `name`, keeping `fn(phi)`.

    The weight's variable is assigned the value the layer was computing with,
    `fn(phi)`, and the parametrizations' state variables are dropped.

    Args:
        layer: a `keras.layers.Layer` or a `Parametrized` wrapper.
        name: a parametrized weight of the layer.

    Returns:
        The (unwrapped) layer, now plain for weight `name`.
    """
    if isinstance(layer, Parametrized):
        layer = layer.layer
    hook = _hook(layer)
    names = sorted({n for n, _ in hook.entries}) if hook else []
    if name not in names:
        raise ValueError(
            f"`name` must be a parametrized weight of layer '{layer.name}': "
            f"{names}. Received: name={name!r}"
        )
    variable, _ = hook.targets[name]
    variable.assign(hook.value(name))
    for n, p in list(hook.entries):
        if n == name:
            internals.untrack(layer, p)
    hook.entries = [(n, p) for n, p in hook.entries if n != name]
    del hook.targets[name]
    if hook.entries:
        _sync_tracking(layer, hook)
    else:
        with internals.unlocked(layer):
            delattr(layer, _REGISTRY_ATTR)
        internals.clear_instance_override(layer, "call")
        internals.clear_instance_override(layer, "get_config")
    return layer


@keras.saving.register_keras_serializable(package="layerwise")
class Parametrized(keras.layers.Wrapper):
    """A layer whose weights are parametrized, as a serializable wrapper.

    Calls the wrapped layer unchanged; the parametrizations live on that
    layer (see `parametrize`). The wrapper records them in its config, so a
    model that calls it saves and loads them, and its `get_weights` /
    `set_weights` speak the values the layer computes with, `theta = fn(phi)`
    (in the order of the plain layer's weights), so pretrained weights load
    as they are.

    Args:
        layer: the layer to wrap.
        parametrizations: optional list of `(weight_name, parametrization)`
            pairs to register, in order.
        **kwargs: base wrapper keyword arguments.
    """

    def __init__(self, layer, parametrizations=None, **kwargs):
        super().__init__(layer, **kwargs)
        for name, fn in parametrizations or ():
            _add(self.layer, name, fn)

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def _plain_weights(self):
        state = {id(v) for _, p in parametrizations(self.layer) for v in p.weights}
        return [v for v in self.layer.weights if id(v) not in state]

    def _names_by_variable(self):
        hook = _hook(self.layer)
        targets = hook.targets if hook else {}
        return {id(v): name for name, (v, _) in targets.items()}

    def get_weights(self):
        hook, names = _hook(self.layer), self._names_by_variable()
        return [
            ops.convert_to_numpy(
                hook.value(names[id(v)]) if id(v) in names else v
            )
            for v in self._plain_weights()
        ]

    def set_weights(self, weights):
        variables = self._plain_weights()
        if len(weights) != len(variables):
            raise ValueError(
                f"`weights` must be a list of {len(variables)} arrays, as "
                f"returned by `get_weights()`. Received: {len(weights)} arrays"
            )
        hook, names = _hook(self.layer), self._names_by_variable()
        for variable, value in zip(variables, weights):
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Weight '{variable.name}' has shape "
                    f"{tuple(variable.shape)}. Received: shape {value.shape}"
                )
            x = ops.convert_to_tensor(value, dtype=variable.dtype)
            name = names.get(id(variable))
            for p in reversed(hook.chain(name) if name else []):
                x = p.right_inverse(x)
            variable.assign(x)

    def get_config(self):
        pairs = [
            [name, keras.saving.serialize_keras_object(p)]
            for name, p in parametrizations(self.layer)
        ]
        token = _serializing_in_wrapper.set(True)
        try:
            base = super().get_config()
        finally:
            _serializing_in_wrapper.reset(token)
        return {**base, "parametrizations": pairs}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        config["parametrizations"] = [
            (name, keras.saving.deserialize_keras_object(p, custom_objects))
            for name, p in config.get("parametrizations") or ()
        ]
        return cls(layer, **config)
