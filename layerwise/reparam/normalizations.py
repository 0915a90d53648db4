"""Built-in parametrizations: spectral normalization and weight normalization.

Both are `Parametrization`s, so they apply to any weight of any layer through
`parametrize(layer, name, fn)` and take part in the gradient, unlike Keras'
`SpectralNormalization` wrapper, which assigns the normalized kernel in place.
A weight of shape `(..., n)` is seen as the matrix `(-1, n)`, the layout of
Keras kernels (`Dense`, `Conv*`, `Embedding` alike).
"""

import keras
from keras import ops

from layerwise.reparam.parametrize import Parametrization


def _normalize(x, eps=1e-12):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x))), eps)


@keras.saving.register_keras_serializable(package="layerwise")
class SpectralNorm(Parametrization):
    """`theta = phi / sigma(phi)`, `sigma` the largest singular value.

    `sigma` is estimated by power iteration; the right singular vector `u`
    is a non-trainable variable, refined by `power_iterations` steps on each
    call in training and used as it is otherwise. The gradient flows through
    `phi` in both numerator and `sigma` (with `u`, `v` held constant), as in
    Miyato et al. (2018).

    Args:
        power_iterations: int >= 1, iterations per training call.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, power_iterations=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError(
                "`power_iterations` must be an integer >= 1. Received: "
                f"power_iterations={power_iterations!r}"
            )
        self.power_iterations = power_iterations

    def build(self, input_shape):
        self.u = self.add_weight(
            shape=(1, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(),
            trainable=False,
            name="u",
        )

    def sigma(self, phi, training=False):
        """The estimate of the largest singular value of `phi` (as a matrix)."""
        w = ops.reshape(phi, (-1, phi.shape[-1]))
        u = ops.cast(self.u, w.dtype)
        steps = self.power_iterations if training else 0
        for _ in range(steps):
            v = _normalize(ops.matmul(u, ops.transpose(w)))
            u = _normalize(ops.matmul(v, w))
        u = ops.stop_gradient(u)
        if training:
            self.u.assign(ops.cast(u, self.u.dtype))
        v = ops.stop_gradient(_normalize(ops.matmul(u, ops.transpose(w))))
        return ops.squeeze(ops.matmul(ops.matmul(v, w), ops.transpose(u)))

    def call(self, phi, training=None):
        return phi / self.sigma(phi, training=bool(training))

    def get_config(self):
        config = {"power_iterations": self.power_iterations}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="layerwise")
class WeightNorm(Parametrization):
    """`theta = g * phi / ||phi||`: weight normalization (Salimans & Kingma).

    The norm is taken over every axis except `axis`; `g` is a new trainable
    variable with one entry per index of `axis`, initialized to the norm of
    the weight so that registering it leaves the layer's function unchanged.

    Args:
        axis: int, tuple of ints or `None`: the axes kept (one `g` each);
            `-1` (the output units of Keras kernels) by default, `None` for a
            single norm over the whole weight.
        epsilon: small float added to the norm.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, axis=-1, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if axis is not None and not isinstance(axis, (int, tuple, list)):
            raise ValueError(
                "`axis` must be an int, a tuple of ints or None. Received: "
                f"axis={axis!r}"
            )
        self.axis = tuple(axis) if isinstance(axis, (tuple, list)) else axis
        self.epsilon = epsilon

    def _kept_axes(self, rank):
        if self.axis is None:
            return ()
        axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        for a in axes:
            if not -rank <= a < rank:
                raise ValueError(
                    f"`axis` must index a weight of rank {rank}. Received: "
                    f"axis={self.axis!r}"
                )
        return tuple(sorted(a % rank for a in axes))

    def build(self, input_shape):
        rank = len(input_shape)
        kept = self._kept_axes(rank)
        self._reduce = tuple(a for a in range(rank) if a not in kept)
        self._g_shape = tuple(
            input_shape[a] if a in kept else 1 for a in range(rank)
        )
        self.g = self.add_weight(
            shape=tuple(input_shape[a] for a in kept),
            initializer="ones",
            name="g",
        )

    def _norm(self, x):
        return ops.sqrt(ops.sum(ops.square(x), axis=self._reduce, keepdims=True))

    def call(self, phi, training=None):
        g = ops.reshape(ops.cast(self.g, phi.dtype), self._g_shape)
        return g * phi / (self._norm(phi) + self.epsilon)

    def right_inverse(self, theta):
        self.g.assign(ops.reshape(self._norm(theta), self.g.shape))
        return theta

    def get_config(self):
        config = {"axis": self.axis, "epsilon": self.epsilon}
        return {**super().get_config(), **config}


def spectral_norm(power_iterations=1):
    """A spectral-normalization parametrization, for `parametrize`.

    Args:
        power_iterations: int >= 1, power-iteration steps per training call.

    Returns:
        A `SpectralNorm`.

    Example:

    >>> dense = keras.layers.Dense(3)
    >>> dense.build((None, 4))
    >>> layer = lw.parametrize(dense, "kernel", lw.spectral_norm())
    """
    return SpectralNorm(power_iterations=power_iterations)


def weight_norm(axis=-1):
    """A weight-normalization parametrization, for `parametrize`.

    Args:
        axis: the axes kept by the norm (one trainable scale `g` each).

    Returns:
        A `WeightNorm`.

    Example:

    >>> conv = keras.layers.Conv2D(8, 3)
    >>> conv.build((None, 16, 16, 3))
    >>> layer = lw.parametrize(conv, "kernel", lw.weight_norm())
    """
    return WeightNorm(axis=axis)
