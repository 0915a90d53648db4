"""Capture intermediate values during `predict`, without a second model.

```python
with capture(model, names=["encoder/mha:attention_scores", "hidden"]) as cap:
    model.predict(x)
cap["hidden"]            # NumPy array, batches concatenated
```

How it works. On entering the scope, `capture` wraps the `call` of each
target layer (an instance attribute, removed on exit) so that it records its
output, and wraps `model.predict` so that, for the calls made inside the
scope, the predict step returns the recorded tensors next to the model's
outputs. The extra outputs leave the compiled step like any output, so this
is exact in eager and compiled predict on every backend; `predict` then
returns only the model's outputs, and the captured batches are concatenated.
Outside the scope nothing is wrapped, so `fit`/`predict` cost nothing extra:
the model's own compiled predict function is set aside during the scope and
restored on exit, not rebuilt.

What can be captured, by layer name or path (`layer.path`):

- `"<layer>"`: the output of any layer called once per predict step,
  including sublayers of other layers (e.g. `"block/mha/query"`). For an
  `Observe` layer this is the observed tensor. Outputs must have a leading
  batch axis so that batches can be concatenated.
- `"<layer>:attention_scores"` for a `keras.layers.MultiHeadAttention`: the
  softmax attention probabilities, shape `(batch, heads, query, key)`, before
  dropout, as `return_attention_scores=True` returns them. While capturing,
  the layer is called with `return_attention_scores=True`, which makes Keras
  use its explicit einsum-softmax path instead of the fused
  `dot_product_attention`: outputs agree to float rounding, not bit for bit.
  Fails if the layer uses flash attention (Keras cannot return scores then).
"""

import keras
import numpy as np

from layerwise._internals import trainers as _trainer_internals
from layerwise.observation.observe import Observe

ATTENTION_SCORES = "attention_scores"


def capture(model, names=None):
    """Returns a context manager capturing intermediate values of `predict`.

    Args:
        model: A built `keras.Model`.
        names: Layer names or paths to capture, optionally suffixed with
            `":attention_scores"` for a `MultiHeadAttention` layer. Defaults
            to every `Observe` layer created with `capture=True`.

    Returns:
        A `Capture`; use it in a `with` block, then index it by name.

    Example:

    >>> inputs = keras.Input((3,))
    >>> h = keras.layers.Dense(4, name="hidden")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
    >>> with capture(model, names=["hidden"]) as cap:
    ...     outputs = model.predict(np.ones((5, 3)), verbose=0)
    >>> outputs.shape, cap["hidden"].shape
    ((5, 1), (5, 4))
    """
    return Capture(model, names)


class Capture:
    """The values captured by `capture(model, names)`; see `capture`.

    Index it by name (`cap["hidden"]`) or read `values`, a dict of NumPy
    arrays, after the `with` block or between `predict` calls inside it.
    Values of several `predict` calls are concatenated along the batch axis.
    """

    def __init__(self, model, names=None):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`model` must be a keras.Model. Received: model={model!r}"
            )
        if names is not None and (
            isinstance(names, str) or not all(isinstance(n, str) for n in names)
        ):
            raise TypeError(
                "`names` must be a list of strings or None. "
                f"Received: names={names!r}"
            )
        self.model = model
        self._targets = _resolve(model, names)
        self._batches = {name: [] for name, _, _ in self._targets}
        self._step_values = None  # Dict of tensors while a step is traced.
        self._capture_function = None
        self._active = False

    @property
    def names(self):
        return [name for name, _, _ in self._targets]

    @property
    def values(self):
        return {name: self[name] for name in self.names}

    def __getitem__(self, name):
        if name not in self._batches:
            raise KeyError(
                f"{name!r} is not captured. Captured names: {self.names}"
            )
        batches = self._batches[name]
        if not batches:
            raise ValueError(
                f"Nothing was captured for {name!r}: call `model.predict` "
                "inside the `with capture(...)` block first."
            )
        return np.concatenate(batches, axis=0)

    def __enter__(self):
        if self._active:
            raise RuntimeError("A `Capture` cannot be entered twice at once.")
        self._active = True
        for layer, outputs in self._by_layer().items():
            layer.call = self._recording_call(layer.call, outputs)
        self.model.predict = self._capturing_predict(self.model.predict)
        return self

    def __exit__(self, *exc_info):
        for layer in self._by_layer():
            del layer.call
        del self.model.predict
        self._active = False
        return False

    def _by_layer(self):
        """`{layer: [(name, kind), ...]}` in target order."""
        by_layer = {}
        for name, layer, kind in self._targets:
            by_layer.setdefault(layer, []).append((name, kind))
        return by_layer

    def _record(self, name, value):
        if self._step_values is None:
            return  # Not inside a capturing predict step (e.g. a build).
        if name in self._step_values:
            raise ValueError(
                f"Cannot capture {name!r}: its layer was called more than "
                "once in one predict step. Capture a layer called once."
            )
        self._step_values[name] = value

    def _recording_call(self, call, outputs):
        """`call`, recording the requested `(name, kind)` outputs."""
        wants_scores = any(kind == ATTENTION_SCORES for _, kind in outputs)

        def recording_call(*args, **kwargs):
            if wants_scores:
                return_scores = kwargs.pop("return_attention_scores", False)
                output, scores = call(
                    *args, return_attention_scores=True, **kwargs
                )
                result = (output, scores) if return_scores else output
            else:
                output = result = call(*args, **kwargs)
            for name, kind in outputs:
                self._record(
                    name, scores if kind == ATTENTION_SCORES else output
                )
            return result

        return recording_call

    def _step(self, original_step):
        """A predict step returning `(outputs, captured)`."""

        def run(*args):
            self._step_values = {}
            try:
                result = original_step(*args)
                captured = self._step_values
            finally:
                self._step_values = None
            missing = [n for n in self.names if n not in captured]
            if missing:
                raise ValueError(
                    f"Cannot capture {missing}: their layers were not called "
                    "during the predict step."
                )
            if keras.backend.backend() == "jax":
                outputs, non_trainable_variables = result
                return (outputs, captured), non_trainable_variables
            return result, captured

        return run

    def _capturing_predict(self, predict):
        model = self.model

        def capturing_predict(*args, **kwargs):
            own_function = model.predict_function
            model.predict_step = self._step(model.predict_step)
            model.predict_function = self._capture_function
            try:
                outputs, captured = predict(*args, **kwargs)
            finally:
                self._capture_function = model.predict_function
                model.predict_function = own_function
                del model.predict_step
            for name, value in captured.items():
                self._batches[name].append(keras.ops.convert_to_numpy(value))
            return outputs

        return capturing_predict


def _resolve(model, names):
    """`[(name, layer, kind)]` for the requested names."""
    layers = _trainer_internals.nested_layers(model)
    if names is None:
        targets = [
            (layer.name, layer, "output")
            for layer in layers
            if isinstance(layer, Observe) and layer.capture
        ]
        if not targets:
            raise ValueError(
                "`names` must be given when the model has no `Observe` layer "
                "created with `capture=True`. Received: names=None"
            )
        return targets
    targets = []
    for name in names:
        layer_name, _, kind = name.partition(":")
        kind = kind or "output"
        matches = [
            layer for layer in layers if layer_name in (layer.name, layer.path)
        ]
        if not matches:
            raise ValueError(
                f"`names` must name layers of the model. Received: {name!r}; "
                f"layer paths: {[layer.path or layer.name for layer in layers]}"
            )
        if len(matches) > 1:
            raise ValueError(
                f"`names` entry {name!r} matches several layers; use a path. "
                f"Matching paths: {[layer.path for layer in matches]}"
            )
        layer = matches[0]
        if kind == ATTENTION_SCORES and not isinstance(
            layer, keras.layers.MultiHeadAttention
        ):
            raise ValueError(
                f"':{ATTENTION_SCORES}' applies to MultiHeadAttention layers "
                f"only. Received: {name!r}, a {type(layer).__name__}"
            )
        if kind not in ("output", ATTENTION_SCORES):
            raise ValueError(
                f"`names` entries must be '<layer>' or "
                f"'<layer>:{ATTENTION_SCORES}'. Received: {name!r}"
            )
        targets.append((name, layer, kind))
    return targets
