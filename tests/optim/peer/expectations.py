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
- `MASKED`: engine bugs that a `KNOWN` test hits before its private
  access; each has a counterpart in `test_counterparts.py` that checks the
  same behaviour through the public API (and is in `ENGINE_BUGS`).

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

_CLIP_GRADIENTS = (
    "calls the private `_clip_gradients` on the optimizer it built. The "
    "wrapper clips inside `apply` with its inner optimizer's settings; its "
    "own `_clip_gradients` is the base class's, which sees no clip setting "
    "(this test would pass by accident if `clipnorm` & co. were mirrored "
    "onto the wrapper: then drop the entry)"
)
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
_EMA_AVERAGES = (
    "reads the private `_model_variables_moving_average`; the wrapper keeps "
    "its own averages (`ema_pairs()`, `layerwise.ema_weights`)"
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
    "`lr_scale` lives in a variable (`lr_scale_all`, so it can change "
    "without retracing), one more than the plain optimizer has"
)

KNOWN = {
    **{
        f"{cls}.{test}": _CLIP_GRADIENTS
        for cls in _PER_OPTIMIZER
        for test in ("test_clip_norm", "test_clip_value")
    },
    "optimizer_test.OptimizerTest.test_clip_norm": _CLIP_GRADIENTS,
    "optimizer_test.OptimizerTest.test_clip_value": _CLIP_GRADIENTS,
    "optimizer_test.OptimizerTest.test_global_clip_norm": _CLIP_GRADIENTS,
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
    "muon_test.MuonTest.test_muon_weight_decay": (
        "calls Muon's private `_apply_weight_decay`; through `apply`, the "
        "wrapper decays as plain Muon (`weight_decay` for the matrices, "
        "`adam_weight_decay` for the others)"
    ),
    "muon_test.MuonTest.test_adamw_weight_decay": (
        "calls Muon's private `_apply_weight_decay`; through `apply`, the "
        "wrapper decays as plain Muon (`weight_decay` for the matrices, "
        "`adam_weight_decay` for the others)"
    ),
    "nadam_test.NadamTest.test_build_with_empty_var_list": (
        "reads Nadam's private `_u_product` on the optimizer it built"
    ),
    "adam_test.AdamTest.test_ema": _EMA_AVERAGES,
    "adam_test.AdamTest.test_ema_overwrite_frequency": _EMA_AVERAGES,
    "optimizer_test.OptimizerTest.test_ema": _EMA_AVERAGES,
    "optimizer_test.OptimizerTest.test_ema_with_model_fit": _EMA_AVERAGES,
    "multi_optimizer_test.MultiOptimizerTest.test_swap_ema_weights_with_multi_optimizer": (
        _EMA_AVERAGES
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
}

# ---------------------------------------------------------------------------
# Engine bugs: the wrapper is wrong.

EXCLUDE_FROM_WEIGHT_DECAY = Cause(
    "`exclude_from_weight_decay` called on the wrapper is silently ignored",
    "`LayerwiseOptimizer` inherits Keras' `exclude_from_weight_decay`, which "
    "records the exclusions on the wrapper (`_exclude_from_weight_decay`, "
    "`_exclude_from_weight_decay_pattern`), but the plan asks the inner "
    "optimizer whether to decay (`_default_weight_decay` -> "
    "`_internals.optimizers.uses_weight_decay(inner, v)` -> "
    "`inner._use_weight_decay`), which never saw them: excluded variables "
    "are decayed.",
)
CLIP_SETTINGS = Cause(
    "`clipnorm`, `clipvalue`, `global_clipnorm` read on the wrapper are `None`",
    "The wrapper calls the base `Optimizer.__init__` without them, so its "
    "public attributes stay `None` while the inner optimizer holds the "
    "settings and does the clipping.",
)
EMPTY_GRADIENTS = Cause(
    "all-`None` gradients do not raise",
    "Keras' `apply` raises `ValueError('No gradients provided for any "
    "variable.')` when every gradient is `None`; the wrapper's "
    "`_trainable_subset` drops them with a warning and goes on to count a "
    "step.",
)
LOSS_SCALE_FACTOR = Cause(
    "`loss_scale_factor` set on the wrapper is ignored",
    "`LossScaleOptimizer` sets `inner_optimizer.loss_scale_factor = None` "
    "and `MultiOptimizer` sets each sub-optimizer's `loss_scale_factor`; on "
    "the wrapper that sets its own attribute, but `_step` divides the "
    "gradients by `self.inner_optimizer.loss_scale_factor` (and "
    "`scale_loss` uses it too), so gradients are unscaled by the wrong "
    "factor, or twice.",
)
SET_WEIGHTS_MESSAGE = Cause(
    "`set_weights` before build raises with a different message",
    "Same `ValueError`, but the wrapper's own text ('The optimizer must be "
    "built before `set_weights()`...') instead of Keras' ('You are calling "
    "`set_weights()` on an optimizer that has not yet been built...'), "
    "which the test matches. The rest of the test (build, `set_weights`, "
    "same values) passes.",
)
TF_VARIABLE_PATH = Cause(
    "raw `tf.Variable`s break `build` (TensorFlow)",
    "`build` first reads `v.path` to key runtime-unfrozen sets "
    "(`self._updater_of = {... if v.path in set_of_path}`), which a "
    "`tf.Variable` lacks: `AttributeError`. Regex and layer selectors and "
    "the plan read `variable.path` too. Keras accepts such variables (it "
    "reads `path` only for its missing-gradient warning, falling back to "
    "`name`).",
)
TF_CHECKPOINT = Cause(
    "`tf.train.Checkpoint` cannot save the wrapper (TensorFlow)",
    "`__init__` removes the base class's `_iterations` and `_learning_rate` "
    "from its tracked `_variables` with Keras' `_untrack_variable`; on "
    "TensorFlow that list is a trackable `ListWrapper`, which refuses to be "
    "saved once an element was deleted ('A list element was replaced ... "
    "or deleted'). Plain Keras has the same flaw after `optimizer."
    "learning_rate = schedule`, but a plain optimizer never hits it by "
    "default.",
)
ACCUMULATION_STEPS_ATTRIBUTE = Cause(
    "`gradient_accumulation_steps` read on the wrapper is `None`",
    "The wrapper takes the inner optimizer's `gradient_accumulation_steps` "
    "over as `accumulate_steps` and sets the inner one to `None`; its own "
    "public attribute is the base class's `None`. (Hidden in Keras' "
    "`test_gradient_accumulation` behind its private reads.)",
)
OVERWRITE_UNDER_ACCUMULATION = Cause(
    "`overwrite_with_gradient` variables are overwritten at every "
    "micro-step under accumulation",
    "Keras overwrites such a variable only at the real step, with the "
    "element-wise maximum of the micro-steps' gradients. The wrapper calls "
    "`_overwrite_variables_directly_with_gradients` on itself (whose "
    "`gradient_accumulation_steps` is `None`) in `_trainable_subset`, "
    "before accumulation, so each micro-step writes its raw gradient. "
    "(Hidden in Keras' `test_overwrite_with_gradient_with_gradient_"
    "accumulation` behind its private reads.)",
)
EMA_OVERWRITE_FREQUENCY = Cause(
    "`ema_overwrite_frequency` is refused",
    "`_check_inner` raises `ValueError` for an inner optimizer with "
    "`use_ema` and `ema_overwrite_frequency` (a v1 decision, asserted by "
    "`tests/optim/test_optimizer_errors.py` and `tests/optim/stages/"
    "test_ema.py`), where Keras overwrites the weights with their averages "
    "every `ema_overwrite_frequency` steps. Engine v2 must support it or "
    "list it as a known exception with a reason. (Hidden in Keras' "
    "`test_ema_overwrite_frequency` and `test_ema` behind their private "
    "reads.)",
)

ENGINE_BUGS = {
    **{
        f"{cls}.test_weight_decay": EXCLUDE_FROM_WEIGHT_DECAY
        for cls in _PER_OPTIMIZER
        # Ftrl and Muon have no such test. ScheduleFreeAdamW's passes: it
        # checks only the excluded variable after one zero-gradient step,
        # and that first step rebuilds the variable from its momentum slot,
        # decayed or not.
        if cls.split(".")[0]
        not in ("ftrl_test", "muon_test", "schedule_free_adamw_test")
    },
    "optimizer_test.OptimizerTest.test_clip_args": CLIP_SETTINGS,
    "optimizer_test.OptimizerTest.test_empty_gradients": EMPTY_GRADIENTS,
    "loss_scale_optimizer_test.LossScaleOptimizerTest.test_finite_step_with_inner_loss_scale_stateful": (
        LOSS_SCALE_FACTOR
    ),
    "loss_scale_optimizer_test.LossScaleOptimizerTest.test_finite_step_with_inner_loss_scale_stateless": (
        LOSS_SCALE_FACTOR
    ),
    "multi_optimizer_test.MultiOptimizerTest.test_gradient_unscaling": LOSS_SCALE_FACTOR,
    "optimizer_test.OptimizerTest.test_set_weights": SET_WEIGHTS_MESSAGE,
    "optimizer_test.OptimizerTest.test_mixed_with_tf_variables": TF_VARIABLE_PATH,
    "optimizer_test.OptimizerTest.test_tf_checkpointing": TF_CHECKPOINT,
    "counterparts.test_gradient_accumulation_steps_is_readable": (
        ACCUMULATION_STEPS_ATTRIBUTE
    ),
    "counterparts.test_overwrite_with_gradient_under_accumulation": (
        OVERWRITE_UNDER_ACCUMULATION
    ),
    "counterparts.test_ema_overwrite_frequency": EMA_OVERWRITE_FREQUENCY,
}

# Tests skipped where they are slow, in the variant that adds least (the
# catch-all variant runs the same update path plus the rule), unless the
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
}

# Engine bugs hidden behind a known exception, and the public counterpart
# that exposes each.
MASKED = {
    "optimizer_test.OptimizerTest.test_gradient_accumulation": (
        "counterparts.test_gradient_accumulation_steps_is_readable"
    ),
    "optimizer_test.OptimizerTest.test_overwrite_with_gradient_with_gradient_accumulation": (
        "counterparts.test_overwrite_with_gradient_under_accumulation"
    ),
    "adam_test.AdamTest.test_ema_overwrite_frequency": (
        "counterparts.test_ema_overwrite_frequency"
    ),
    "optimizer_test.OptimizerTest.test_ema": "counterparts.test_ema_overwrite_frequency",
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
    lines += ["", "### Engine bugs masked by a known exception (`MASKED`)", ""]
    lines += ["| Keras test (known exception) | Public counterpart |", "|---|---|"]
    for test_id, counterpart in sorted(MASKED.items()):
        lines.append(f"| `{test_id}` | `{counterpart}` |")
    lines += ["", END]
    return "\n".join(lines)


def documented_part(text):
    """The generated part of a docs text, or `None` if absent."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(END)]


def write_docs():
    text = DOCS.read_text()
    old = documented_part(text)
    if old is None:
        raise SystemExit(f"{DOCS} has no generated section ({BEGIN!r}).")
    DOCS.write_text(text.replace(old, render()))


if __name__ == "__main__":
    write_docs()
    sys.exit(0)
