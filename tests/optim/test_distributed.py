"""LayerwiseOptimizer under tf.distribute.MirroredStrategy (2 logical CPUs)
and under keras.distribution.DataParallel on JAX (4 host CPU devices)."""

import ast
import os
import subprocess
import sys

from tests.conftest import only_on

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "mirrored_equivalence.py")
DATA_PARALLEL_SCRIPT = os.path.join(
    os.path.dirname(__file__), "..", "scripts", "data_parallel_equivalence.py"
)


@only_on("tensorflow")
def test_mirrored_strategy_matches_single_device():
    result = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # Per-group scales, decay override, frozen variable, Nadam's step state.
    assert float(_printed(out, "max_abs_diff")) < 1e-6, out
    # Group optimizers (Muon, SGD with its own clipnorm), every slot equal.
    assert float(_printed(out, "max_abs_diff_groups")) < 1e-6, out
    # Rule transforms (gradient, update, projections), the inner global
    # clip, EMA and diagnostics.
    assert float(_printed(out, "max_abs_diff_transforms")) < 1e-6, out
    # The clip sees the all-reduced gradient: clip(-10.1) = -1, so w = 1.0
    # (clipping each replica's gradient would give 1.1).
    assert float(_printed(out, "toy_w_single")) == 1.0
    assert float(_printed(out, "toy_w_mirrored")) == 1.0
    # Accumulation with SplitAccumulation (no conditional) works under the
    # strategy and equals one device with the conditional step.
    assert _printed(out, "accumulation_steps") == "5 5", out
    assert float(_printed(out, "max_abs_diff_accumulation")) < 1e-6, out
    # The options that need a conditional step are refused clearly.
    assert out.count("refused") == 2 and "False" not in _printed(out, "refused"), out


def _printed(stdout, key):
    line = [l for l in stdout.splitlines() if l.startswith(key + " ")][-1]
    return line.split(" ", 1)[1]


@only_on("jax")
def test_data_parallel_matches_single_device_on_jax():
    """AdamW with scaled, decay-free, frozen and clipped groups trains the
    same over 4 devices (batch split 4 x 4, weights replicated) as on one,
    and the clip is not a no-op."""
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    result = subprocess.run(
        [sys.executable, DATA_PARALLEL_SCRIPT],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert _printed(out, "devices") == "4", out
    placement = ast.literal_eval(_printed(out, "placement_parallel"))
    assert placement["batch_shards"] == ((4, 6),) * 4, out
    assert placement["weight_devices"] == 4 and placement["weight_replicated"], out
    assert placement["slot_devices"] == 4, out
    assert _printed(out, "iterations") == "12 12", out
    assert float(_printed(out, "initial_max_abs_diff")) == 0.0, out
    assert float(_printed(out, "frozen_moved")) == 0.0, out
    assert float(_printed(out, "clip_effect")) > 1e-3, out
    assert float(_printed(out, "optimizer_state_max_abs_diff")) < 1e-5, out
    assert float(_printed(out, "max_abs_diff")) < 1e-5, out
    # With accumulation, EMA, non-finite skipping, diagnostics, a group
    # optimizer (SGD with momentum on the head), update transforms and a
    # projection too.
    assert _printed(out, "iterations_options") == "6 6", out
    assert float(_printed(out, "max_abs_diff_options")) < 1e-5, out
    assert float(_printed(out, "optimizer_state_max_abs_diff_options")) < 1e-5, out
