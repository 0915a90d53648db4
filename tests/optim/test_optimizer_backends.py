"""Backend-specific paths: JAX's stateless_apply and torch's fused kernels."""

import keras
import numpy as np

import layerwise as lw
from tests.conftest import only_on


def _setup():
    variables = [
        keras.Variable(np.full((3, 2), 1.0, "float32"), name="a"),
        keras.Variable(np.full((2,), -1.0, "float32"), name="b"),
        keras.Variable(np.full((4,), 0.5, "float32"), name="c"),
    ]
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Nadam(0.1),
        [lw.Rule(variables[0], lr_scale=0.1), lw.Rule(variables[1], frozen=True)],
    )
    grads = [keras.ops.ones(v.shape) * (i + 1) for i, v in enumerate(variables)]
    return variables, opt, grads


@only_on("jax")
def test_stateless_apply_equals_apply():
    variables, opt, grads = _setup()
    opt.build(variables)
    new_vars, new_opt_vars = opt.stateless_apply(
        [v.value for v in opt.variables], grads, [v.value for v in variables]
    )
    new_vars, new_opt_vars = opt.stateless_apply(new_opt_vars, grads, new_vars)
    # The stateful objects are untouched by stateless_apply.
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 0

    ref_vars, ref_opt, _ = _setup()
    ref_opt.apply(grads, ref_vars)
    ref_opt.apply(grads, ref_vars)
    for new, ref in zip(new_vars, ref_vars):
        np.testing.assert_allclose(np.asarray(new), keras.ops.convert_to_numpy(ref), rtol=1e-6)
    for new, ref in zip(new_opt_vars, ref_opt.variables):
        np.testing.assert_allclose(np.asarray(new), keras.ops.convert_to_numpy(ref), rtol=1e-6)


@only_on("torch")
def test_torch_keeps_the_fused_update_one_call_per_group(monkeypatch):
    variables, opt, grads = _setup()
    opt.build(variables)
    inner = opt.inner_optimizer
    fused_calls, loop_calls = [], []
    fused = inner._parallel_update_step

    def count_fused(g, v, lr):
        fused_calls.append(len(v))
        return fused(g, v, lr)

    monkeypatch.setattr(inner, "_parallel_update_step", count_fused)
    monkeypatch.setattr(inner, "update_step", lambda *a: loop_calls.append(1))
    opt.apply(grads, variables)
    # Two groups (scaled "a", unscaled "c"); frozen "b" is not updated.
    assert sorted(fused_calls) == [1, 1]
    assert loop_calls == []
