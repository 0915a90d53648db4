"""`muon_rules`: routing by role and timm's shape test, equality with a
hand-built Keras `MultiOptimizer(Muon, AdamW)`, what Keras' Muon does with
the conv kernels routed to it, `summary()`, saving, and bad input."""

import warnings

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.recipes.muon import muon_rules
from layerwise.recipes.muon import muon_suitability
from tests import helpers
from tests.conftest import BACKEND

# Three steps: JAX compiles the step faster than it runs it op by op; TF
# runs them faster eagerly than it traces them.
COMPILED = BACKEND == "jax"
EAGER = BACKEND == "tensorflow"

# The toy's expected routes: the contract of issue #14, written out by hand.
TOY_ROUTES = {
    "embed/embeddings": "adamw: embedding",  # tied: also the logits' projection
    "conv_a/kernel": "muon (AdamW path)",  # (3, 3, 8, 16) -> (72, 16)
    "conv_a/bias": "adamw: 1-D",
    "conv_b/kernel": "muon (AdamW path)",  # (3, 3, 16, 16) -> (144, 16)
    "conv_b/bias": "adamw: 1-D",
    "dense_a/kernel": "muon",  # (256, 16)
    "dense_a/bias": "adamw: 1-D",
    "dense_b/kernel": "muon",  # (16, 8)
    "dense_b/bias": "adamw: 1-D",
    "head/kernel": "adamw: output layer",
    "head/bias": "adamw: output layer",
}


def _init(seed):
    """Normal weights drawn by numpy: JAX compiles Keras' random
    initializers once per shape, seconds each on the suite's CPUs."""

    def initializer(shape, dtype=None):
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(max(1, int(np.prod(shape[:-1]))))
        return keras.ops.convert_to_tensor(rng.normal(size=shape) * scale, dtype)

    return initializer


def _toy(seed=0):
    """Tied embedding, two Conv2D, two Dense and a head."""
    inputs = keras.Input((16,), dtype="int32")
    embed = keras.layers.ReversibleEmbedding(
        32, 8, tie_weights=True, embeddings_initializer=_init(seed), name="embed")
    x = keras.layers.Reshape((4, 4, 8))(embed(inputs))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                            kernel_initializer=_init(seed + 1), name="conv_a")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                            kernel_initializer=_init(seed + 2), name="conv_b")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="tanh", kernel_initializer=_init(seed + 3),
                           name="dense_a")(x)
    x = keras.layers.Dense(8, kernel_initializer=_init(seed + 4), name="dense_b")(x)
    x = embed(x, reverse=True)  # the tied use: logits over the vocabulary
    outputs = keras.layers.Dense(3, kernel_initializer=_init(seed + 5), name="head")(x)
    return keras.Model(inputs, outputs)


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 32, size=(n, 16)).astype("int32")
    y = rng.normal(size=(n, 3)).astype("float32")
    return x, y


def _muon():
    return keras.optimizers.Muon(
        0.02, weight_decay=0.1, adam_weight_decay=0.01, adam_lr_ratio=0.5
    )


def _adamw():
    return keras.optimizers.AdamW(0.01, weight_decay=0.05)


def _fit(model, optimizer, steps=3):
    x, y = _data(n=8 * steps)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=COMPILED, run_eagerly=EAGER)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)


def _routes(rules):
    return {path: rule.name for rule in rules for path in rule.selector.paths}


def test_toy_routes_exactly_as_the_contract_says():
    rules = muon_rules(_toy(), muon=_muon(), adamw_path="muon")
    assert _routes(rules) == TOY_ROUTES
    assert [rule.name for rule in rules] == [
        "muon", "muon (AdamW path)", "adamw: embedding", "adamw: 1-D", "adamw: output layer"]
    muon_opts = {id(rule.optimizer) for rule in rules if rule.name.startswith("muon")}
    assert len(muon_opts) == 1  # one Muon: shared slots and step count
    assert all(rule.optimizer is None for rule in rules if rule.name.startswith("adamw"))
    assert all(rule.weight_decay is None and rule.lr_scale is None for rule in rules)


def test_three_fit_steps_equal_keras_multi_optimizer():
    """The contract's reference: Keras' `MultiOptimizer(Muon, AdamW)` with
    the toy's mapping written out by hand."""
    model = _toy()
    opt = lw.LayerwiseOptimizer(_adamw(), muon_rules(model, muon=_muon(), adamw_path="muon"))
    _fit(model, opt)
    ref_muon, ref_adamw = _muon(), _adamw()
    reference = _toy()
    _fit(reference, keras.optimizers.MultiOptimizer(
        lambda v: ref_muon if TOY_ROUTES[v.path].startswith("muon") else ref_adamw))
    assert int(opt.iterations) == 3
    helpers.assert_weights_close(
        helpers.weights(model), helpers.weights(reference), rtol=1e-5, atol=1e-6)
    moved = [np.abs(a - b).max() for a, b in zip(helpers.weights(model), helpers.weights(_toy()))]
    assert min(moved) > 1e-4  # every variable learned


def _numpy(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _gradients(variables, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    return [[keras.ops.convert_to_tensor(rng.normal(size=v.shape), "float32") for v in variables]
            for _ in range(steps)]


def test_conv_kernels_routed_to_muon_take_its_adamw_step():
    """What Keras' Muon does with the conv kernels routed to it: with
    `adam_lr_ratio=1`, exactly a plain `AdamW(muon_lr,
    weight_decay=adam_weight_decay)`."""
    inputs = keras.Input((4, 4, 2))
    # (3, 3, 2, 8) -> (18, 8)
    x = keras.layers.Conv2D(8, 3, kernel_initializer=_init(1), name="conv_a")(inputs)
    x = keras.layers.Dense(8, kernel_initializer=_init(2), name="hidden")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, kernel_initializer=_init(3), name="head")(x))
    muon = keras.optimizers.Muon(0.02, weight_decay=0.1, adam_weight_decay=0.01,
                                 adam_lr_ratio=1.0)
    rules = muon_rules(model, muon=muon, adamw_path="muon")
    assert _routes(rules)["conv_a/kernel"] == "muon (AdamW path)"
    opt = lw.LayerwiseOptimizer(_adamw(), rules)
    variables = model.trainable_variables
    index = [v.path for v in variables].index("conv_a/kernel")
    start = _numpy([variables[index]])
    conv = [variables[index]]
    reference = [keras.Variable(keras.ops.convert_to_numpy(conv[0]))]
    adamw = keras.optimizers.AdamW(0.02, weight_decay=0.01)
    for grads in _gradients(variables):
        opt.apply(grads, variables)
        adamw.apply([grads[index]], reference)
    helpers.assert_weights_close(_numpy(conv), _numpy(reference))
    assert np.abs(_numpy(conv)[0] - start[0]).max() > 1e-3


def test_summary_shows_route_reason_and_update_per_variable():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(1200, name="wide", use_bias=False,
                           kernel_initializer=_init(0))(inputs)  # (4, 1200)
    x = keras.layers.Dense(16, name="hidden", kernel_initializer=_init(1))(x)
    x = keras.layers.Dense(16, name="hidden_2", use_bias=False, kernel_initializer=_init(2))(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head", kernel_initializer=_init(3))(x))
    opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3),
                                muon_rules(model, muon=keras.optimizers.Muon(0.02)))
    opt.build(model.trainable_variables)
    rows = {r["path"]: (", ".join(r["rules"]), r["update"]) for r in opt.summary_rows()}
    assert rows == {
        "wide/kernel": ("adamw: aspect ratio 300", "AdamW"),
        "hidden/kernel": ("muon", "Muon"),
        "hidden/bias": ("adamw: 1-D", "AdamW"),
        "hidden_2/kernel": ("muon", "Muon"),
        "head/kernel": ("adamw: output layer", "AdamW"),
        "head/bias": ("adamw: output layer", "AdamW"),
    }
    lines = []
    opt.summary(print_fn=lines.append)
    assert "adamw: aspect ratio 300" in lines[0] and "rule optimizers: Muon" in lines[0]


# timm's docstring examples and edges, in Keras' layout (output axis last).
TIMM_TABLE = {
    (64, 128): None,
    (4, 4, 3, 96): None,  # timm (96, 3, 4, 4) -> (48, 96)
    (2048, 4): "aspect ratio 512",  # timm (4, 2048)
    (64,): "1-D",
    (): "0-D",
    (1, 1, 64): "1 non-unit dim",
    (3, 64): "smallest dim 3",
    (3, 3, 1, 1): "smallest dim 1",  # a depthwise 3x3 kernel's one channel
    (4, 512): None,  # aspect ratio exactly 128 is allowed
    (4, 516): "aspect ratio 129",
}


def test_shape_test_matches_timm():
    assert {shape: muon_suitability(shape) for shape in TIMM_TABLE} == TIMM_TABLE


def test_thresholds_are_arguments():
    assert muon_suitability((3, 64), min_dim=2) is None
    assert muon_suitability((4, 516), max_aspect_ratio=200) is None


def test_conv_kernels_on_muon_warn_unless_asked():
    with pytest.warns(UserWarning, match="2 variables routed to Muon are updated by its AdamW step"):
        muon_rules(_toy(), muon=_muon())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rules = muon_rules(_toy(), muon=_muon(), adamw_path="muon")
        moved = muon_rules(_toy(), muon=_muon(), adamw_path="default")
    assert _routes(rules)["conv_a/kernel"] == "muon (AdamW path)"
    assert _routes(moved)["conv_a/kernel"] == "adamw: Muon's AdamW path"
    assert _routes(moved)["dense_a/kernel"] == "muon"


def test_muon_exclusions_count_as_its_adamw_path():
    """Keras' Muon also takes its AdamW path for `exclude_layers`."""
    muon = keras.optimizers.Muon(exclude_layers=["dense_b"])
    routes = _routes(muon_rules(_toy(), muon=muon, adamw_path="default"))
    assert routes["dense_b/kernel"] == "adamw: Muon's AdamW path"
    assert routes["dense_a/kernel"] == "muon"


def test_tied_weights_stay_on_the_default_optimizer():
    class TransposedProjection(keras.layers.Layer):
        """Logits through the transpose of another Dense's kernel."""

        def __init__(self, source, **kwargs):
            super().__init__(**kwargs)
            self.source = source

        def call(self, x):
            return keras.ops.matmul(x, keras.ops.transpose(self.source.kernel))

    inputs = keras.Input((16,))
    encode = keras.layers.Dense(8, name="encode", use_bias=False)
    x = keras.layers.Dense(16, name="hidden")(encode(inputs))
    x = TransposedProjection(encode, name="decode")(keras.layers.Dense(8, name="down")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    routes = _routes(muon_rules(model, muon=_muon()))
    assert routes["encode/kernel"] == "adamw: tied"
    assert routes["hidden/kernel"] == routes["down/kernel"] == "muon"


def test_output_layer_is_found_through_parameter_free_layers_and_nested_models():
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, name="inner_head")(
        keras.layers.Dense(8, name="inner_hidden")(inner_in)), name="inner")
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="hidden")(inputs)
    x = inner(x)
    x = keras.layers.Activation("softmax")(keras.layers.Dropout(0.1)(x))
    model = keras.Model(inputs, keras.ops.multiply(x, 2.0))
    routes = _routes(muon_rules(model, muon=_muon()))
    assert routes["inner_head/kernel"] == "adamw: output layer"
    assert routes["inner_hidden/kernel"] == routes["hidden/kernel"] == "muon"


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, name="hidden")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def test_subclassed_model_needs_output_layers():
    model = _Subclassed()
    model(np.zeros((1, 8), "float32"))
    with pytest.raises(ValueError, match="`output_layers` must be given for a subclassed"):
        muon_rules(model, muon=_muon())
    head, hidden = model.head.kernel.path, model.hidden.kernel.path
    routes = _routes(muon_rules(model, muon=_muon(), output_layers=[model.head]))
    assert routes[head] == "adamw: output layer"
    assert routes[hidden] == "muon"
    routes = _routes(muon_rules(model, muon=_muon(), output_layers=[]))
    assert routes[head] == "adamw: smallest dim 2"


def test_output_layers_by_name_override_detection():
    model = _toy()
    routes = _routes(muon_rules(model, muon=_muon(), output_layers=["dense_b", "head"],
                                adamw_path="muon"))
    assert routes["dense_b/kernel"] == "adamw: output layer"
    assert routes["dense_a/kernel"] == "muon"


def _small(seed=0):
    # Functional: a `Sequential` model's variable paths change on reload
    # (`sequential/hidden/kernel` -> `hidden/kernel`, Keras 3.15).
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(32, 4, name="embed")(inputs))
    x = keras.layers.Dense(8, activation="tanh", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_save_load_round_trip_continues_identically(tmp_path):
    model = _small()
    rules = muon_rules(model, muon=_muon())
    model.compile(optimizer=lw.LayerwiseOptimizer(_adamw(), rules), loss="mse")
    variables = model.trainable_variables
    first, second, third = _gradients(variables)
    model.optimizer.apply(first, variables)
    model.optimizer.apply(second, variables)
    path = str(tmp_path / "muon.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    opt = loaded.optimizer
    assert _routes(opt.rules) == _routes(model.optimizer.rules) == {
        "hidden/kernel": "muon", "embed/embeddings": "adamw: embedding",
        "hidden/bias": "adamw: 1-D", "head/kernel": "adamw: output layer",
        "head/bias": "adamw: output layer"}
    assert isinstance(opt.get_rule("muon").optimizer, keras.optimizers.Muon)
    assert int(opt.get_rule("muon").optimizer.iterations) == 2
    model.optimizer.apply(third, variables)
    opt.apply(third, loaded.trainable_variables)
    helpers.assert_weights_close(
        helpers.weights(loaded), helpers.weights(model), rtol=1e-6, atol=1e-7)


def test_bad_input_fails_early_in_keras_form():
    model = _toy()
    with pytest.raises(TypeError, match="`muon` must be a `keras.optimizers.Optimizer`"):
        muon_rules(model, muon="muon")
    with pytest.raises(ValueError, match="`adamw_path` must be one of"):
        muon_rules(model, muon=_muon(), adamw_path="adam")
    with pytest.raises(ValueError, match="`min_dim` must be a number >= 1"):
        muon_rules(model, muon=_muon(), min_dim=0)
    with pytest.raises(ValueError, match="`output_layers` must name layers of the model"):
        muon_rules(model, muon=_muon(), output_layers=["nope"])
    with pytest.raises(TypeError, match="`model` must be a `keras.Model`"):
        muon_rules(keras.layers.Dense(2), muon=_muon())
    with pytest.raises(ValueError, match="`model` must be built"):
        muon_rules(keras.Sequential([keras.layers.Dense(2)]), muon=_muon())
    built = keras.optimizers.Muon()
    built.build(model.trainable_variables[:1])
    with pytest.raises(ValueError, match="`optimizer` must not be built yet"):
        muon_rules(model, muon=built, adamw_path="muon")


def test_no_hidden_matrix_is_an_error_that_lists_the_routes():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="hidden"),
                              keras.layers.Dense(2, name="head")])
    with pytest.raises(ValueError, match=r"at least one hidden matrix .*'adamw: output layer': 4"):
        muon_rules(model, muon=_muon(), output_layers=["hidden", "head"])


def test_conv_flatten_routes_conv_kernels_to_flattened_muon():
    inputs = keras.Input((6, 6, 8))
    # (3, 3, 8, 16) -> (72, 16)
    x = keras.layers.Conv2D(16, 3, kernel_initializer=_init(1), name="conv")(inputs)
    x = keras.layers.EinsumDense("abc,cde->abde", (16, 4, 4), kernel_initializer=_init(2),
                                 name="einsum")(keras.layers.Reshape((16, 16))(x))  # not a conv
    x = keras.layers.Dense(8, kernel_initializer=_init(3), name="hidden")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, kernel_initializer=_init(4), name="head")(x))
    rules = muon_rules(model, conv="flatten")
    assert isinstance(rules[0].optimizer, lw.FlattenedMuon)
    assert _routes(rules) == {
        "conv/kernel": "muon",
        "conv/bias": "adamw: 1-D",
        "einsum/kernel": "adamw: 3-D, not a conv kernel",
        "hidden/kernel": "muon",
        "hidden/bias": "adamw: 1-D",
        "head/kernel": "adamw: output layer",
        "head/bias": "adamw: output layer",
    }


def test_conv_option_and_muon_class_must_agree():
    model = _toy()
    with pytest.raises(ValueError, match="`conv` must be one of"):
        muon_rules(model, conv="reshape")
    with pytest.raises(TypeError, match="must be a `layerwise.FlattenedMuon`"):
        muon_rules(model, muon=keras.optimizers.Muon(), conv="flatten")
    with pytest.raises(ValueError, match="pass `conv='flatten'`"):
        muon_rules(model, muon=lw.FlattenedMuon())
