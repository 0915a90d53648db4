"""Layers: in-graph gradient control (`ScaleGradient`, `ReverseGradient`)
and `Observe` (defined in `layerwise.observation.observe`)."""

import keras

from layerwise import ops as lw_ops
from layerwise.observation.observe import Observe

__all__ = ["Observe", "ReverseGradient", "ScaleGradient"]


class _GradientFactor(keras.layers.Layer):
    """Holds a factor, a float or a `keras.Variable` changed during training."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(factor, keras.Variable):
            if isinstance(factor, bool) or not isinstance(factor, (int, float)):
                raise ValueError(
                    "`factor` must be a float or a `keras.Variable`. "
                    f"Received: factor={factor!r}"
                )
            factor = float(factor)
        self.factor = factor
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        factor = self.factor
        if isinstance(factor, keras.Variable):
            factor = float(keras.ops.convert_to_numpy(factor))
        return {**super().get_config(), "factor": factor}


@keras.saving.register_keras_serializable(package="layerwise")
class ScaleGradient(_GradientFactor):
    """Identity forward; multiplies the gradient flowing back by `factor`.

    Args:
        factor: a float, or a `keras.Variable` to change it during training
            (e.g. from a callback); saved as its current value.
        **kwargs: base layer keyword arguments.

    Example:

    >>> backbone_out = keras.Input((8,))
    >>> slowed = ScaleGradient(0.1)(backbone_out)
    """

    def call(self, inputs):
        return lw_ops.scale_gradient(inputs, self.factor)


@keras.saving.register_keras_serializable(package="layerwise")
class ReverseGradient(_GradientFactor):
    """Identity forward; multiplies the gradient flowing back by `-factor`.

    Args:
        factor: a float or a `keras.Variable` (see `ScaleGradient`).
        **kwargs: base layer keyword arguments.

    Example:

    >>> features = keras.Input((8,))
    >>> adversarial = ReverseGradient()(features)
    """

    def call(self, inputs):
        return lw_ops.reverse_gradient(inputs, self.factor)
