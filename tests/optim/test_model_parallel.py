"""LayerwiseOptimizer under keras.distribution.ModelParallel on JAX: eight
host CPU devices in a 2 x 4 mesh ("batch" x "model"), kernels and
embeddings sharded over "model"."""

import ast
import collections
import os
import subprocess
import sys

from tests.conftest import only_on

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "model_parallel_equivalence.py")


def _printed(stdout, key):
    line = [l for l in stdout.splitlines() if l.startswith(key + " ")][-1]
    return line.split(" ", 1)[1]


def _shape(hlo_type):
    """`f32[8,16]{0,1}` -> (8, 16)."""
    dims = hlo_type.split("[", 1)[1].split("]", 1)[0]
    return tuple(int(d) for d in dims.split(",") if d)


@only_on("jax")
def test_model_parallel_matches_single_device_on_jax():
    """A two-block transformer with layer decay, a frozen block, a decay
    override, a binding global clip and a trust ratio on a block's updates,
    an SGD group on the head with a max-norm projection, accumulation
    (2 micro-batches) and EMA: five real `fit` steps on a 2 x 4 mesh equal
    one device; every optimizer variable is sharded like its variable,
    scalars are replicated; the compiled step gathers nothing the plain
    optimizer's does not; a `.keras` file saved from the mesh loads on one
    device with every weight and optimizer variable equal."""
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND="jax",
        # Eight host devices; and the CPU backend's cheapest code generation,
        # which compiles the three steps a third faster. The sharding (and
        # so every collective counted below) is decided by the SPMD
        # partitioner before code generation: the same gathers and the same
        # figures to within 1e-6 without these two flags.
        XLA_FLAGS="--xla_force_host_platform_device_count=8 "
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    )
    result = subprocess.run(
        [sys.executable, SCRIPT],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert _printed(out, "devices") == "8", out
    assert float(_printed(out, "initial_max_abs_diff")) == 0.0, out
    assert _printed(out, "iterations") == "5 5", out
    assert float(_printed(out, "frozen_moved")) == 0.0, out
    # The clip binds on both: the clipped group's norm is the threshold.
    for norm in _printed(out, "clipped_norm").split():
        assert abs(float(norm) - 0.05) < 1e-6, out
    assert float(_printed(out, "max_abs_diff")) < 1e-5, out
    assert float(_printed(out, "ema_max_abs_diff")) < 1e-5, out
    assert float(_printed(out, "optimizer_state_max_abs_diff")) < 1e-5, out

    placement = ast.literal_eval(_printed(out, "placement"))
    assert placement["mismatched"] == [], out
    assert placement["sharded_weights"] == 22, out
    # Non-frozen weights: 19 x (AdamW's 2 slots, accumulator, average) and
    # the head's 2 x (SGD momentum, accumulator, average) = 74 tensors
    # sharded like their variables. Replicated: 2 step counters, 2 learning
    # rates, the micro-step, the vector of the 4 multipliers, 9 diagnostics
    # = 15. The trust ratio and the projection hold no state.
    assert placement["per_variable"] == 17 * 4 + 2 * 3, out
    assert placement["replicated"] == 15, out
    # Saved from the mesh to a `.keras` file, loaded on one device: equal.
    assert float(_printed(out, "reloaded_max_abs_diff")) == 0.0, out
    # Keras warns when local and mesh-sharded state are mixed (which fails
    # to compile as "incompatible devices").
    assert ast.literal_eval(_printed(out, "warnings")) == [], out
    assert "incompatible devices" not in result.stderr, result.stderr[-3000:]

    plain = collections.Counter(ast.literal_eval(_printed(out, "all_gathers_plain")))
    ours = collections.Counter(ast.literal_eval(_printed(out, "all_gathers_layerwise")))
    # Both gather activations at the sharded matmuls, and the replicated
    # vectors (with their state) that XLA splits inside the accumulation
    # conditional; see docs/scaling_out.md.
    assert sum(plain.values()) > 0, out
    # Every all-gather of the layerwise step is one the plain step also does.
    assert not ours - plain, (ours - plain, out)
    sharded = {tuple(s) for s in ast.literal_eval(_printed(out, "sharded_shapes"))}
    assert not {_shape(t) for t in ours} & sharded, out
