"""Keras' training, callback and saving tests the peer suite runs, and how.

Each file is loaded as the optimizer tests are (`harness.load`): an
optimizer class the file imports builds the wrapper. Most of these tests
compile with a string (`model.compile(optimizer="sgd")`) that Keras
resolves inside `Trainer.compile`; while a test of these files runs, the
trainer module's reference to `keras.src.optimizers` is the variant's
proxy (`compile_hook`), whose `get` wraps the plain optimizer it builds. So
every compiled optimizer is wrapped (a `LossScaleOptimizer` that `compile`
adds for `mixed_float16` goes around the wrapper), and a model loaded from
a file is compiled with the `LayerwiseOptimizer` its file recorded. That
one name is patched, and only for the duration of a test.

Selection rule: a test runs if it compiles a model with an optimizer and
then trains, changes the learning rate, swaps or restores weights through a
callback, saves or loads the compiled model or reads the optimizer's
state; within that, the cheapest tests of each behaviour (the whole suite
runs on three backends within a fixed time). `SELECTED` names them by file;
`LEFT_OUT` says what was left out and why. Both are rendered in
`docs/peer_suite.md`.
"""

import contextlib
import fnmatch
import pathlib

from keras.src import optimizers as keras_optimizers
from keras.src.trainers import trainer as keras_trainer_module

from tests.optim.peer import harness

KERAS_SRC = pathlib.Path(keras_optimizers.__file__).parents[1]

# Every test the file defines.
ALL = ("*",)

# File (relative to `keras/src/`) -> test-method patterns (`fnmatch`, so a
# parametrized test's cases are `name_*`).
SELECTED = {
    "callbacks/backup_and_restore_test.py": ("test_best_case_step",),
    "callbacks/callback_test.py": ALL,
    "callbacks/early_stopping_test.py": (
        "test_early_stopping_final_weights_when_restoring_model_weights",
    ),
    "callbacks/lambda_callback_test.py": ("test_lambda_callback",),
    "callbacks/learning_rate_scheduler_test.py": (
        "test_updates_learning_rate",
        "test_schedule_dependent_on_previous_learning_rate",
        "test_throws_when_optimizer_has_schedule",
        "test_learning_rate_in_history",
    ),
    "callbacks/reduce_lr_on_plateau_test.py": (
        "test_reduces_lr_with_model_fit",
        "test_throws_when_optimizer_has_schedule",
    ),
    "callbacks/swap_ema_weights_test.py": (
        "test_swap_ema_weights",
        "test_swap_ema_weights_on_epoch",
        "test_swap_ema_weights_with_invalid_optimizer",
        "test_swap_ema_weights_with_loss_scale_optimizer",
    ),
    "callbacks/terminate_on_nan_test.py": (
        "test_raise_error_terminate_preserves_backup",
        "test_terminate_on_nan_graceful_stop",
    ),
    "legacy/saving/legacy_h5_format_test.py": (
        "LegacyH5WholeModelTest.test_compiled_model_with_various_layers",
        "LegacyH5WholeModelTest.test_saving_include_optimizer_false",
    ),
    "models/model_test.py": (
        "test_functional_single_output_single_output_1",
        "test_get_state_tree",
        "test_set_state_tree",
    ),
    "saving/file_editor_test.py": ("test_scalar_weight",),
    "saving/saving_lib_test.py": (
        "test_compile_preserved_basic_functional",
    ),
    "trainers/trainer_test.py": (
        "test_fit_flow_eager",
        "test_on_batch_methods_eager",
        "test_adds_loss_scaling_optimizer",
        "test_recompile",
        "test_multiple_compiles",
        "test_constraints_are_applied",
        "test_fit_with_val_split_eager",
        "test_fit_eval_flow_for_jax_model_weights",
        "test_fit_with_custom_train_step",
    ),
}

_SLOW = "seconds each on 2 CPU cores"

# What was left out, and why: file (or `file: tests`) -> reason.
LEFT_OUT = {
    "callbacks/backup_and_restore_test.py: the rest": (
        "argument errors raised before training; other cases of the backup "
        f"and restore path `test_best_case_step` runs ({_SLOW})"
    ),
    "callbacks/csv_logger_test.py, monitor_callback_test.py, remote_monitor_test.py": (
        "log or monitor metrics: nothing reaches the optimizer beyond `fit`, "
        "which the selected tests cover"
    ),
    "callbacks/early_stopping_test.py, lambda_callback_test.py, reduce_lr_on_plateau_test.py, learning_rate_scheduler_test.py, terminate_on_nan_test.py: the rest": (
        "the same `fit`, callback and optimizer path as the selected tests "
        "of the file, with other monitor, logging or hook arguments "
        f"({_SLOW})"
    ),
    "callbacks/swap_ema_weights_test.py: test_swap_ema_weights_with_tf_distribute": (
        "reconfigures TensorFlow's logical devices for the whole process "
        "(the suite's own distribution tests set them up once), about 20 s; "
        "it passes with the wrapper in both variants"
    ),
    "callbacks/model_checkpoint_test.py": (
        f"{_SLOW}; file naming and `save_freq` options. `ModelCheckpoint` "
        "saving the compiled model and `load_model` reading it back run in "
        "`swap_ema_weights_test.test_swap_ema_weights_on_epoch`"
    ),
    "callbacks/orbax_checkpoint_test.py": "needs `orbax` (not installed)",
    "callbacks/tensorboard_test.py": (
        "needs the `tensorboard` package (not installed); its learning-rate "
        "logging reads `optimizer.learning_rate`, which the optimizer "
        "suite's `test_tensorboard_logging_with_multi_optimizer` runs"
    ),
    "legacy/saving/legacy_h5_format_test.py: the rest": (
        "uncompiled models or weights only, or need `tf_keras` (not "
        "installed); a legacy `.h5` model whose optimizer has rules: "
        "`tests/optim/test_keras_drop_in.py`"
    ),
    "models/model_test.py: the rest": (
        "functional API, structures of losses and metrics, quantization, "
        "export: `compile(optimizer=\"sgd\")` and one step at most, the "
        "path `test_functional_single_output_single_output_1` keeps"
    ),
    "saving/file_editor_test.py: the rest": "uncompiled models, file handling",
    "saving/saving_api_test.py, serialization_lib_test.py, object_registration_test.py": (
        "save and load uncompiled models, weights or plain objects"
    ),
    "saving/saving_lib_test.py: the rest": (
        "`test_compile_preserved_*` with other model kinds "
        f"({_SLOW}; the optimizer part is the same); uncompiled models, "
        "custom objects, assets, file handling. "
        "`test_saved_module_paths_and_class_names` asserts the saved "
        "optimizer's class and module path (`LayerwiseOptimizer`, "
        f"`layerwise.optim.optimizer`): no failure, and {_SLOW}"
    ),
    "trainers/trainer_test.py: the rest": (
        f"{_SLOW} (the file takes about 3 minutes per variant on JAX): data "
        "adapters (`grain` ones need `grain`, not installed), "
        "`steps_per_execution` and `steps_per_epoch` variants, metrics, "
        "losses, predict, the other execution modes of the selected tests; "
        "one case of each optimizer-facing behaviour runs. Run with the "
        "rest, `test_fit_sparse_*` fails on TensorFlow: it patches "
        "`assign_sub` on the optimizer it compiled to spy on sparse "
        "updates, which the wrapper's inner optimizer writes with its own "
        "(the optimizer suite's `test_sparse_gradients_*`, known exceptions "
        "for the same reason; `test_sparse_correctness_*` checks the values)"
    ),
}


def selected(path, test_id):
    """Whether `<Class>.<method>` of the Keras file `path` runs."""
    relative = path.relative_to(KERAS_SRC).as_posix()
    method = test_id.split(".")[-1]
    return any(
        fnmatch.fnmatchcase(test_id if "." in pattern else method, pattern)
        for pattern in SELECTED[relative]
    )


def files():
    """The selected Keras test files, in name order."""
    return [KERAS_SRC / relative for relative in sorted(SELECTED)]


@contextlib.contextmanager
def compile_hook(variant):
    """While inside, `Trainer.compile` wraps the optimizer it resolves."""
    namespace = harness.Namespace(variant)
    real = keras_trainer_module.optimizers
    keras_trainer_module.optimizers = namespace.substitute(real)
    try:
        yield
    finally:
        keras_trainer_module.optimizers = real


# ---------------------------------------------------------------------------
# Rendering into docs/peer_suite.md (`python -m tests.optim.peer.expectations`
# writes it).

BEGIN = "<!-- BEGIN GENERATED selection, by `python -m tests.optim.peer.expectations` -->"
END = "<!-- END GENERATED selection -->"


def render():
    """The generated selection part of `docs/peer_suite.md`."""
    lines = [BEGIN, "", "| Keras file (`keras/src/...`) | tests run |", "|---|---|"]
    for relative in sorted(SELECTED):
        patterns = ", ".join(f"`{p}`" for p in SELECTED[relative])
        lines.append(f"| `{relative}` | {'all' if SELECTED[relative] == ALL else patterns} |")
    lines += ["", "Left out:", ""]
    for what, why in LEFT_OUT.items():
        lines.append(f"- `{what}`: {why}.")
    lines += ["", END]
    return "\n".join(lines)
