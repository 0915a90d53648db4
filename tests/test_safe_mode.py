"""Loading `.keras` files whose optimizer carries code.

A rule's `match` predicate, `gradient` transforms and callable `lr_scale`,
and the optimizer's `gradient_hook`, are saved as Keras serializes
functions: registered functions by name, lambdas as bytecode. Under
`keras.models.load_model(path)` (`safe_mode=True`, the default) a lambda is
refused with Keras' message on how to opt out, and an unregistered function
with Keras' message on how to register it; no code from the file runs.

The crafted-file tests edit `config.json` inside a saved `.keras` zip to put
a lambda that writes a marker file where an attacker could: each field that
layerwise deserializes itself. The same file loaded with `safe_mode=False`
does write the marker, so the payload is live and the refusal is what
protects.
"""

import json
import os
import warnings
import zipfile

import keras
import numpy as np
import pytest
from keras.src.utils import python_utils  # func_dump: how Keras saves a lambda

import layerwise as lw
from layerwise.optim import selectors
from tests import helpers

LAMBDA_REFUSED = (
    r"deserialization of a Python lambda.*`safe_mode=False`.*"
    r"enable_unsafe_deserialization"
)


def _saved_model(path, rules=None, gradient_hook=None):
    """Saves a compiled model whose optimizer is built (so the file holds
    its variables) and returns the model."""
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        rules if rules is not None else [lw.Rule("l0/.*", lr_scale=0.5, name="body")],
        gradient_hook=gradient_hook,
    )
    model.compile(opt, "mse")
    opt.build(model.trainable_variables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns when it saves a lambda.
        model.save(path)
    return model


def _train_one_step(model):
    x, y = helpers.data(n=16)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


# ----------------------------------------------------------------------
# Files written by `model.save` from rules that use lambdas or functions.


def _lambda_in(field):
    if field == "transform":
        return {"rules": [lw.Rule("l0/.*", gradient=lambda g, v: g * 0.5, name="body")]}
    if field == "chained transform":
        return {"rules": [lw.Rule("l0/.*", gradient=lw.chain(lw.clip_by_norm(1.0), lw.per_variable(lambda g, v: g)), name="body")]}
    if field == "lr_scale":
        return {"rules": [lw.Rule("l0/.*", lr_scale=lambda step: 0.5, name="body")]}
    if field == "match in a list":
        return {"rules": [lw.Rule(["l1/.*", lambda v: v.path.startswith("l0/")], lr_scale=0.5, name="body")]}
    return {"gradient_hook": lambda grads, variables: grads}


@pytest.mark.parametrize(
    "field", ["transform", "chained transform", "lr_scale", "match in a list", "gradient_hook"]
)
def test_saved_lambda_is_refused_in_safe_mode_and_loads_when_opted_out(tmp_path, field):
    path = os.path.join(tmp_path, "model.keras")
    model = _saved_model(path, **_lambda_in(field))
    with pytest.raises(ValueError, match=LAMBDA_REFUSED):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, safe_mode=False)
    assert isinstance(loaded.optimizer, lw.LayerwiseOptimizer)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model), rtol=0, atol=0)


def _local_functions():
    """Functions that exist in this process but are not registered."""

    def halve(gradient, variable):
        return gradient * 0.5

    def identity_hook(grads, variables):
        return grads

    def constant_scale(step):
        return 0.5

    return halve, identity_hook, constant_scale


@pytest.mark.parametrize("field", ["transform", "gradient_hook", "lr_scale"])
def test_unregistered_function_is_refused_with_how_to_register(tmp_path, field):
    """Keras' message names the function and the decorator; passing it in
    `custom_objects` loads the file in safe mode."""
    halve, identity_hook, constant_scale = _local_functions()
    fn = {"transform": halve, "gradient_hook": identity_hook, "lr_scale": constant_scale}[field]
    if field == "gradient_hook":
        kwargs = {"gradient_hook": fn}
    elif field == "transform":
        kwargs = {"rules": [lw.Rule("l0/.*", gradient=fn, name="body")]}
    else:
        kwargs = {"rules": [lw.Rule("l0/.*", lr_scale=fn, name="body")]}
    path = os.path.join(tmp_path, "model.keras")
    _saved_model(path, **kwargs)
    with pytest.raises(
        TypeError,
        match=rf"Could not locate function '{fn.__name__}'.*register_keras_serializable",
    ):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, custom_objects={fn.__name__: fn})
    if field == "gradient_hook":
        assert loaded.optimizer.gradient_hook is fn
    elif field == "transform":
        assert loaded.optimizer.get_rule("body").gradient[0].fn is fn
    else:
        assert loaded.optimizer.get_rule("body").describe_scale() == fn.__name__


# ----------------------------------------------------------------------
# Crafted files: a lambda injected into config.json.


def _placeholder(gradient, variable):
    return gradient


def _payload(marker, kind):
    """A lambda that writes `marker` when called, serialized as Keras
    serializes lambdas (`{"class_name": "__lambda__", ...}`, marshalled
    bytecode), inside the object that carries it."""
    write = f"__import__('pathlib').Path({str(marker)!r}).write_text('executed')"
    source = {
        "predicate": f"lambda v: {write} > 0",
        "transform": f"lambda g, v: ({write}, g)[1]",
        "hook": f"lambda grads, variables: ({write}, grads)[1]",
        "scale": f"lambda step: ({write}, 0.5)[1]",
    }[kind]
    fn = eval(source)  # The attacker's lambda; never called here.
    # What `keras.saving.serialize_keras_object` writes for a lambda (it
    # cannot be called on this one: its warning reads the lambda's source).
    dumped = {"class_name": "__lambda__", "config": {"value": python_utils.func_dump(fn)}}
    if kind == "predicate":
        return {
            "class_name": keras.saving.get_registered_name(selectors.Predicate),
            "config": {"fn": dumped},
        }
    if kind == "transform":
        transform = keras.saving.serialize_keras_object(lw.per_variable(_placeholder))
        transform["config"]["fn"] = dumped
        return transform
    return dumped


def _inject(config, field, marker):
    """Puts the payload in `field` of the saved optimizer's first rule (or
    in the optimizer's hook)."""
    opt_config = config["compile_config"]["optimizer"]["config"]
    rule = opt_config["rules"][0]["config"]
    if field == "match":
        rule["match"] = _payload(marker, "predicate")
    elif field == "match in a list":
        rule["match"] = {
            "class_name": keras.saving.get_registered_name(selectors.AnyOf),
            "config": {"selectors": [rule["match"], _payload(marker, "predicate")]},
        }
    elif field == "transform":
        rule["gradient"].append(_payload(marker, "transform"))
    elif field == "chained transform":
        chain = keras.saving.serialize_keras_object(lw.chain(lw.scale(1.0)))
        chain["config"]["transforms"].append(_payload(marker, "transform"))
        rule["gradient"].append(chain)
    elif field == "lr_scale":
        rule["lr_scale"] = _payload(marker, "scale")
    else:
        opt_config["gradient_hook"] = _payload(marker, "hook")


def _rewrite_config(path, crafted_path, edit):
    """Copies the `.keras` zip at `path`, with `edit(config)` applied to
    its `config.json`."""
    with zipfile.ZipFile(path) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    config = json.loads(entries["config.json"])
    edit(config)
    entries["config.json"] = json.dumps(config).encode("utf-8")
    with zipfile.ZipFile(crafted_path, "w") as target:
        for name, data in entries.items():
            target.writestr(name, data)


def _craft(path, crafted_path, field, marker):
    _rewrite_config(path, crafted_path, lambda config: _inject(config, field, marker))


FIELDS = ["match", "match in a list", "transform", "chained transform", "lr_scale", "gradient_hook"]


# A crafted callable `lr_scale` has no multiplier variable, so the opted-out
# load skips the saved optimizer variables, with Keras' warning.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("field", FIELDS)
def test_crafted_lambda_is_refused_and_never_runs_in_safe_mode(tmp_path, field):
    """The injected code does not run in safe mode; with `safe_mode=False`
    it runs (a predicate while loading, the others at the first step)."""
    path = os.path.join(tmp_path, "model.keras")
    crafted = os.path.join(tmp_path, "crafted.keras")
    marker = tmp_path / "marker.txt"
    _saved_model(path)
    _craft(path, crafted, field, marker)

    with pytest.raises(ValueError, match=LAMBDA_REFUSED):
        keras.models.load_model(crafted)
    with pytest.raises(ValueError, match=LAMBDA_REFUSED):
        keras.saving.load_model(crafted, safe_mode=True)
    assert not marker.exists()

    # Without the optimizer (`compile=False`) the file loads safely.
    weights_only = keras.models.load_model(crafted, compile=False)
    assert getattr(weights_only, "optimizer", None) is None
    assert not marker.exists()

    # The payload is live: opting out runs it.
    loaded = keras.models.load_model(crafted, safe_mode=False)
    if field.startswith("match"):
        assert marker.read_text() == "executed"  # Rules are matched at load.
    elif keras.backend.backend() == "jax" and field != "lr_scale":
        # On JAX the hook and transforms run once symbolically when the
        # optimizer is built, which loading does.
        assert marker.read_text() == "executed"
    else:
        assert not marker.exists()
        _train_one_step(loaded)
        assert marker.read_text() == "executed"


def test_crafted_file_refused_at_load_leaves_the_session_in_safe_mode(tmp_path):
    """A refused load does not switch safe mode off for later loads."""
    path = os.path.join(tmp_path, "model.keras")
    crafted = os.path.join(tmp_path, "crafted.keras")
    marker = tmp_path / "marker.txt"
    model = _saved_model(path)
    _craft(path, crafted, "transform", marker)
    with pytest.raises(ValueError, match=LAMBDA_REFUSED):
        keras.models.load_model(crafted)
    with pytest.raises(ValueError, match=LAMBDA_REFUSED):
        keras.models.load_model(crafted)
    clean = keras.models.load_model(path)
    assert clean.optimizer.get_rule("body").lr_scale == 0.5
    np.testing.assert_array_equal(helpers.weights(clean)[0], helpers.weights(model)[0])
    assert not marker.exists()


@pytest.mark.parametrize(
    "match, error, message",
    [
        ({"class_name": "os>system", "config": {}}, ValueError, r"Unknown selector class.*'os>system'"),
        (
            {
                "class_name": keras.saving.get_registered_name(selectors.Predicate),
                "config": {"fn": {"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "exec"}},
            },
            TypeError,
            r"Could not locate function 'exec'",
        ),
        (
            {
                "class_name": keras.saving.get_registered_name(selectors.Predicate),
                "config": {"fn": {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}},
            },
            TypeError,
            r"Could not locate function 'system'",
        ),
    ],
    ids=["selector-class", "builtin-exec", "os-system"],
)
def test_crafted_selector_naming_arbitrary_python_is_refused(tmp_path, match, error, message):
    """A saved selector resolves only to registered classes and to
    registered or Keras functions, in either safe mode."""
    path = os.path.join(tmp_path, "model.keras")
    crafted = os.path.join(tmp_path, "crafted.keras")
    _saved_model(path)

    def edit(config):
        config["compile_config"]["optimizer"]["config"]["rules"][0]["config"]["match"] = match

    _rewrite_config(path, crafted, edit)
    for safe_mode in (True, False):
        with pytest.raises(error, match=message):
            keras.models.load_model(crafted, safe_mode=safe_mode)
