"""Which of Keras' optimizer tests are expected to fail on the wrapper, and why.

The one place where the peer suite's expected failures are listed:

- `KNOWN`: tests that are not meaningful for a wrapper, because they call or
  patch a private member of Keras' class, or assert something that belongs
  to the plain optimizer object (its name, its class, its exact count of
  variables). Marked `xfail(strict=True)`: an entry that starts passing
  fails the suite, so it must then be removed.
- `ENGINE_BUGS`: tests that fail because the wrapper is wrong. Marked
  `xfail(strict=False)` while the engine is rewritten; the engine's owner
  empties this dict.
- `MASKED`: `KNOWN` tests whose private reads would hide a wrong result;
  each has a counterpart in `test_counterparts.py` that checks the same
  behaviour through the public API, plain optimizer against wrapper.

Test ids are `<file stem>.<TestCase class>.<test method>` (for our own
counterparts, `counterparts.<test function>`). An entry covers both variants
and every backend unless wrapped in `Only`. `docs/peer_suite.md` renders
these tables (`python -m tests.optim.peer.expectations` rewrites them).
"""

import dataclasses
import pathlib
import sys


@dataclasses.dataclass(frozen=True)
class Cause:
    """Why the wrapper fails some tests: a one-line summary and a diagnosis."""

    summary: str
    diagnosis: str


@dataclasses.dataclass(frozen=True)
class Only:
    """An expectation that holds in some variants or on some backends only."""

    what: object  # A reason (str) or a `Cause`.
    variants: tuple = ()
    backends: tuple = ()

    def applies(self, variant, backend):
        return (not self.variants or variant in self.variants) and (
            not self.backends or backend in self.backends
        )


# The per-optimizer test classes, one per built-in optimizer.
_PER_OPTIMIZER = (
    "adadelta_test.AdadeltaTest",
    "adafactor_test.AdafactorTest",
    "adagrad_test.AdagradTest",
    "adam_test.AdamTest",
    "adamax_test.AdamaxTest",
    "adamw_test.AdamWTest",
    "ftrl_test.FtrlTest",
    "lamb_test.LambTest",
    "lion_test.LionTest",
    "muon_test.MuonTest",
    "nadam_test.NadamTest",
    "rmsprop_test.RMSpropTest",
    "schedule_free_adamw_test.ScheduleFreeAdamWTest",
    "sgd_test.SGDTest",
)

# `optimizer_sparse_test.TEST_CASES` that wrap a Keras optimizer (all but
# `scatter_update`, an optimizer class the test file defines itself).
_SPARSE_CASES = (
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adam_amsgrad",
    "adamax",
    "adamw",
    "adamw_amsgrad",
    "ftrl",
    "lion",
    "loss_scale_optimizer_sgd",
    "nadam",
    "rmsprop",
    "rmsprop_momentum",
    "rmsprop_momentum_centered",
    "sgd",
    "sgd_momentum",
    "sgd_momentum_nesterov",
)

# ---------------------------------------------------------------------------
# Known exceptions: not meaningful for a wrapper.

_UPDATE_STEP = (
    "calls `update_step(grad, variable, lr)` directly: the per-variable hook "
    "an update rule implements, which a wrapper does not (neither do Keras' "
    "`LossScaleOptimizer` and `MultiOptimizer`); the same Muon steps through "
    "`apply` match plain Muon exactly"
)
_MUON_HELPER = (
    "calls a math helper of Muon's update rule (`{}`) on the optimizer it "
    "built; the wrapper does not forward class-specific methods to "
    "`inner_optimizer` (neither does `LossScaleOptimizer`)"
)
_ACCUMULATION_STATE = (
    "reads the private `_accumulated_gradients` and `_iterations`; the "
    "wrapper keeps its own accumulators and micro-step counter"
)
_SPARSE_SPIES = (
    "patches `assign`/`assign_add`/`assign_sub` and the private "
    "`_apply_weight_decay` on the object it built to spy on the update; the "
    "wrapper's inner optimizer writes the update with its own, unpatched "
    "methods, which then reach the patched `Variable.assign*` and fail the "
    "test (Keras' test unwraps `LossScaleOptimizer` by hand for the same "
    "reason; `test_sparse_correctness_*` checks the sparse updates' values)"
)
_OWN_NAME = (
    "asserts the names Keras gives the plain optimizers (`adam`, `adam_1`, "
    "..., or the `name=` passed to them); the wrapper has its own name "
    "(`layerwise_optimizer`), as `LossScaleOptimizer` does, and its inner "
    "optimizer keeps the plain name"
)
_SCALE_VARIABLE = (
    "counts the optimizer's variables: the catch-all rule's constant "
    "`lr_scale` lives in a variable (`lr_scales`, so it can change "
    "without retracing), one more than the plain optimizer has"
)

_SAVED_SCALE_VARIABLE = (
    "counts the weights saved in the `.keras` file: the catch-all rule's "
    "constant `lr_scale` is a variable of the optimizer (`lr_scales`), "
    "saved with it, one more than the plain optimizer saves"
)

KNOWN = {
    "muon_test.MuonTest.test_adamw_single_step": _UPDATE_STEP,
    "muon_test.MuonTest.test_muon_single_step": _UPDATE_STEP,
    "muon_test.MuonTest.test_Newton_Schulz": _MUON_HELPER.format(
        "zeropower_via_newtonschulz5"
    ),
    "muon_test.MuonTest.test_lr_adjust_none": _MUON_HELPER.format("lr_adjust"),
    "muon_test.MuonTest.test_lr_adjust_2d": _MUON_HELPER.format("lr_adjust"),
    "muon_test.MuonTest.test_should_use_adamw": (
        "calls Muon's private `_should_use_adamw` on the optimizer it built"
    ),
    "muon_test.MuonTest.test_muon_weight_decay": Only(
        "calls `_apply_weight_decay` on the optimizer it built: the wrapper "
        "inherits Keras' implementation, which on TensorFlow and JAX reads "
        "`learning_rate` (the inner optimizer's, so it decays as Muon's "
        "would here) but on torch reads the private "
        "`_get_current_learning_rate`, the wrapper's own unused rate; "
        "through `apply` the wrapper decays as plain Muon on every backend",
        backends=("torch",),
    ),
    "muon_test.MuonTest.test_adamw_weight_decay": (
        "calls Muon's private `_apply_weight_decay`; through `apply`, the "
        "wrapper decays as plain Muon (`weight_decay` for the matrices, "
        "`adam_weight_decay` for the others)"
    ),
    "nadam_test.NadamTest.test_build_with_empty_var_list": (
        "reads Nadam's private `_u_product` on the optimizer it built"
    ),
    "optimizer_test.OptimizerTest.test_gradient_accumulation": _ACCUMULATION_STATE,
    "optimizer_test.OptimizerTest.test_overwrite_with_gradient_with_gradient_accumulation": (
        _ACCUMULATION_STATE
    ),
    **{
        f"optimizer_sparse_test.OptimizerSparseTest.test_sparse_gradients_{case}": (
            _SPARSE_SPIES
        )
        for case in _SPARSE_CASES
    },
    "optimizer_test.OptimizerTest.test_optimizer_auto_naming": _OWN_NAME,
    "multi_optimizer_test.MultiOptimizerTest.test_tensorboard_logging_with_multi_optimizer": (
        "asserts the TensorBoard keys `learning_rate_<sub-optimizer name>` "
        "for the names passed to the plain sub-optimizers (`SGD`, `SGD_1`); "
        "the wrappers have their own names (`layerwise_optimizer`, "
        "`layerwise_optimizer_1`), under which the right rates are logged"
    ),
    "multi_optimizer_test.MultiOptimizerTest.test_serialization": (
        "asserts the class names of the deserialized sub-optimizers "
        "(`Adam`, `SGD`, `RMSprop`); they are `LayerwiseOptimizer`s around "
        "those classes"
    ),
    "sgd_test.SGDTest.test_single_step": Only(_SCALE_VARIABLE, variants=("catch_all",)),
    "optimizer_test.OptimizerTest.test_setting_lr_to_callable_untracks_lr_var": Only(
        _SCALE_VARIABLE, variants=("catch_all",)
    ),
    # Keras' training, callback and saving tests (`training.SELECTED`).
    "file_editor_test.SavingTest.test_scalar_weight": Only(
        _SAVED_SCALE_VARIABLE, variants=("catch_all",)
    ),
}

# ---------------------------------------------------------------------------
# Engine bugs: the wrapper is wrong. Empty: the ten causes the harness
# found in the single-optimizer engine are fixed (see docs/peer_suite.md,
# "Fixed"), and their tests pass.

ENGINE_BUGS = {}

# Tests skipped where they are slow (in the variant that adds least, the
# catch-all variant running the same update path plus the rule, or on the
# backend where they are slow for a reason of their own), unless the
# environment variable `LAYERWISE_PEER_FULL=1` is set. Keys are test-id
# prefixes (a parametrized Keras test has one id per case: `...decay0`, ...).
SLOW = {
    "optimizer_test.OptimizerTest.test_gradient_accumulation_with_weigth_decay": Only(
        "11 optimizers x 32 eager steps, each accumulation step tracing a "
        "`lax.cond`: about 40 s per variant on JAX on 2 idle CPU cores, two "
        "minutes on loaded ones (plain Keras takes as long); the catch_all "
        "variant runs it",
        variants=("no_rules",),
        backends=("jax",),
    ),
    "swap_ema_weights_test.SwapEMAWeightsTest.test_swap_ema_weights": Only(
        "Keras' test compiles with `jit_compile=True`, on torch "
        "`torch.compile`: one to three minutes per test on 2 CPU cores "
        "(they pass); Keras' callback with the wrapper on torch, eagerly: "
        "`tests/optim/stages/test_keras_swap_ema_weights.py`",
        backends=("torch",),
    ),
}

# Known exceptions whose behaviour a public counterpart checks.
MASKED = {
    "optimizer_test.OptimizerTest.test_gradient_accumulation": (
        "counterparts.test_gradient_accumulation_steps_is_readable"
    ),
    "optimizer_test.OptimizerTest.test_overwrite_with_gradient_with_gradient_accumulation": (
        "counterparts.test_overwrite_with_gradient_under_accumulation"
    ),
}


def _lookup(table, test_id, variant, backend):
    entry = table.get(test_id)
    if isinstance(entry, Only):
        return entry.what if entry.applies(variant, backend) else None
    return entry


def slow_reason(test_id, variant, backend):
    """Why `test_id` is skipped here unless `LAYERWISE_PEER_FULL=1`, or `None`."""
    for prefix, entry in SLOW.items():
        if test_id.startswith(prefix) and entry.applies(variant, backend):
            return entry.what
    return None


def known_reason(test_id, variant, backend):
    """The reason `test_id` is a known exception here, or `None`."""
    return _lookup(KNOWN, test_id, variant, backend)


def engine_bug(test_id, variant, backend):
    """The `Cause` of `test_id`'s failure here, or `None`."""
    return _lookup(ENGINE_BUGS, test_id, variant, backend)


# ---------------------------------------------------------------------------
# Rendering into docs/peer_suite.md.

DOCS = pathlib.Path(__file__).parents[3] / "docs" / "peer_suite.md"
BEGIN = "<!-- BEGIN GENERATED by `python -m tests.optim.peer.expectations` -->"
END = "<!-- END GENERATED -->"


def _scope(entry):
    if not isinstance(entry, Only):
        return "all"
    return ", ".join(entry.variants + entry.backends)


def _what(entry):
    return entry.what if isinstance(entry, Only) else entry


def _grouped(table):
    """`{reason or Cause: [(test id, scope)]}`, in order of first appearance."""
    groups = {}
    for test_id, entry in table.items():
        groups.setdefault(_what(entry), []).append((test_id, _scope(entry)))
    return groups


def _bullets(tests):
    lines = []
    for test_id, scope in sorted(tests):
        suffix = "" if scope == "all" else f" ({scope} only)"
        lines.append(f"- `{test_id}`{suffix}")
    return lines


def render():
    """The generated part of `docs/peer_suite.md`."""
    lines = [BEGIN, ""]
    lines += [
        f"### Known exceptions: {len(KNOWN)} tests (`KNOWN`, strict xfail)",
        "",
    ]
    for reason, tests in _grouped(KNOWN).items():
        lines += [f"**{len(tests)}**: {reason[0].upper()}{reason[1:]}.", ""]
        lines += _bullets(tests) + [""]
    lines += [
        f"### Engine bugs: {len(ENGINE_BUGS)} tests (`ENGINE_BUGS`, non-strict xfail)",
        "",
    ]
    for cause, tests in _grouped(ENGINE_BUGS).items():
        lines += [f"#### {cause.summary} ({len(tests)})", "", cause.diagnosis, ""]
        lines += _bullets(tests) + [""]
    lines += ["### Skipped unless `LAYERWISE_PEER_FULL=1` (`SLOW`)", ""]
    for prefix, entry in SLOW.items():
        lines.append(f"- `{prefix}*` ({_scope(entry)} only): {entry.what}.")
    lines += ["", "### Known exceptions checked through the public API (`MASKED`)", ""]
    lines += ["| Keras test (known exception) | Public counterpart |", "|---|---|"]
    for test_id, counterpart in sorted(MASKED.items()):
        lines.append(f"| `{test_id}` | `{counterpart}` |")
    lines += ["", END]
    return "\n".join(lines)


def documented_part(text, begin=BEGIN, end=END):
    """The generated part of a docs text, or `None` if absent."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < 0:
        return None
    return text[start : stop + len(end)]


def write_docs():
    # Imported here: `training` imports Keras' trainer, which only the
    # rendering needs.
    from tests.optim.peer import training

    text = DOCS.read_text()
    for begin, end, rendered in (
        (BEGIN, END, render()),
        (training.BEGIN, training.END, training.render()),
    ):
        old = documented_part(text, begin, end)
        if old is None:
            raise SystemExit(f"{DOCS} has no generated section ({begin!r}).")
        text = text.replace(old, rendered)
    DOCS.write_text(text)


if __name__ == "__main__":
    write_docs()
    sys.exit(0)
