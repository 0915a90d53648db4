"""Trains a small transformer on one device and under
`keras.distribution.ModelParallel` over eight host CPU devices (a 2 x 4
mesh: batch x model), and prints what `tests/optim/test_model_parallel.py`
checks: weight and optimizer-state differences, the sharding of every
optimizer variable next to its variable's, the all-gathers in the compiled
train step next to the plain optimizer's, and Keras' warnings.

Run in its own process: the number of host devices (`XLA_FLAGS`) must be set
before JAX starts. `benchmarks/model_parallel_memory.py` imports the model
and the optimizers from here.
"""

import os
import sys
import warnings

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import layerwise as lw

# The jitted train step `fit` compiles (Keras' JAX trainer makes it through
# this name), kept to read its compiled HLO without compiling it again.
from keras.src.backend.jax import trainer as _jax_trainer

_jitted = []
_jit = _jax_trainer.jit


def _recording_jit(*args, **kwargs):
    _jitted.append(_jit(*args, **kwargs))
    return _jitted[-1]


_jax_trainer.jit = _recording_jit

MESH_SHAPE = (2, 4)
VOCAB, SEQUENCE, WIDTH, HEADS, HIDDEN, CLASSES = 32, 8, 16, 4, 32, 8
BATCH = 16  # 8 per "batch" shard
ACCUMULATE = 2
REAL_STEPS = 5
CLIP = 0.05


class Block(keras.layers.Layer):
    """Pre-norm transformer block: attention and a two-layer MLP."""

    def __init__(self, width, heads, hidden, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.hidden = width, heads, hidden
        self.norm_1 = keras.layers.LayerNormalization(name="norm_1")
        self.attention = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")
        self.norm_2 = keras.layers.LayerNormalization(name="norm_2")
        self.mlp_in = keras.layers.Dense(hidden, activation="gelu", name="mlp_in")
        self.mlp_out = keras.layers.Dense(width, name="mlp_out")

    def build(self, shape):
        self.norm_1.build(shape)
        self.attention.build(shape, shape)
        self.norm_2.build(shape)
        self.mlp_in.build(shape)
        self.mlp_out.build(tuple(shape[:-1]) + (self.hidden,))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "hidden": self.hidden}

    def call(self, x):
        h = self.norm_1(x)
        x = x + self.attention(h, h)
        return x + self.mlp_out(self.mlp_in(self.norm_2(x)))


def transformer(seed=0, vocab=VOCAB, width=WIDTH, heads=HEADS, hidden=HIDDEN):
    """Embedding, `block_0`, `block_1`, mean pooling, a Dense `head`."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((SEQUENCE,), dtype="int32")
    x = keras.layers.Embedding(vocab, width, name="embed")(tokens)
    for i in range(2):
        x = Block(width, heads, hidden, name=f"block_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(tokens, keras.layers.Dense(CLASSES, name="head")(x))


def layout_map(mesh):
    """Dense and EinsumDense kernels and the embeddings over "model"; norms
    and the remaining biases replicated (no entry)."""
    layouts = keras.distribution.LayoutMap(mesh)
    layouts["embed/embeddings"] = (None, "model")
    layouts[".*attention/(query|key|value)/kernel"] = (None, "model", None)
    layouts[".*attention/(query|key|value)/bias"] = ("model", None)
    layouts[".*attention/attention_output/kernel"] = ("model", None, None)
    layouts[".*mlp_in/kernel"] = (None, "model")
    layouts[".*mlp_in/bias"] = ("model",)
    layouts[".*mlp_out/kernel"] = ("model", None)
    layouts["head/kernel"] = (None, "model")
    return layouts


def model_parallel():
    devices = keras.distribution.list_devices("cpu")
    mesh = keras.distribution.DeviceMesh(MESH_SHAPE, ["batch", "model"], devices)
    return keras.distribution.ModelParallel(
        layout_map=layout_map(mesh), batch_dim_name="batch")


def layerwise_optimizer(model, options=True):
    """AdamW under layer decay, a frozen block, a decay override, a binding
    global clip and a trust ratio on a block's updates, a group optimizer
    on the head with its columns' norms capped after the step; with
    `options`, also accumulation, EMA and per-rule gradient norms."""
    rules = lw.layer_decay(model, decay=0.7) + [
        lw.Rule("block_0/.*", frozen=True, name="frozen"),
        lw.Rule(".*(gamma|beta|bias)", weight_decay=0.0, name="no_decay"),
        lw.Rule("block_1/.*", gradient=[lw.clip_by_global_norm(CLIP)],
                update=[lw.trust_ratio()], name="clip"),
        lw.Rule("head/.*", optimizer=keras.optimizers.SGD(0.05, momentum=0.9), name="head_sgd"),
        lw.Rule("head/kernel", project=[lw.max_norm(0.5, axis=0)], name="head_norm"),
    ]
    return lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(0.01, weight_decay=0.05), rules,
        **(dict(accumulate_steps=ACCUMULATE, ema=0.9, log=("grad_norm",)) if options else {}),
    )


def plain_optimizer():
    """Keras' own counterpart: AdamW with its accumulation and EMA."""
    return keras.optimizers.AdamW(
        0.01, weight_decay=0.05, global_clipnorm=1.0,
        gradient_accumulation_steps=ACCUMULATE, use_ema=True, ema_momentum=0.9,
    )


def data():
    rng = np.random.default_rng(0)
    n = BATCH * ACCUMULATE * REAL_STEPS
    x = rng.integers(0, VOCAB, size=(n, SEQUENCE)).astype("int32")
    y = rng.integers(0, CLASSES, size=(n,)).astype("int32")
    return x, y


def _state_and_batch(model, distribution):
    """The train step's arguments as `fit` passes them: the state as the
    variables hold it, the batch split over "batch"."""
    groups = (model.trainable_variables, model.non_trainable_variables,
              model.optimizer.variables, model.metrics_variables)
    state = tuple([v.value for v in group] for group in groups)
    x, y = (a[:BATCH] for a in data())
    batch = tuple(
        keras.distribution.distribute_tensor(a, distribution.get_data_layout(a.shape))
        for a in (x, y))
    return state, batch, tuple([v.value.sharding for v in group] for group in groups)


def compiled_step(model, distribution):
    """The compiled train step of `model` as Keras' JAX trainer jits it (the
    state's current shardings as outputs, the state donated)."""
    import jax

    model.optimizer.build(model.trainable_variables)
    state, batch, shardings = _state_and_batch(model, distribution)
    step = jax.jit(model.train_step, donate_argnums=0, out_shardings=(None, shardings))
    return step.lower(state, batch).compile()


def fitted_step(model, distribution):
    """The compiled train step `fit` ran (from JAX's cache: no compiling)."""
    state, batch, _ = _state_and_batch(model, distribution)
    return _jitted[-1].lower(state, batch).compile()


def all_gathers(hlo):
    """The all-gathers of an optimized HLO module (every computation, the
    branches of a conditional included): their result shapes."""
    gathers = []
    for line in hlo.splitlines():
        for op in (" all-gather(", " all-gather-start("):
            if op in line:
                gathers.append(line.split("=", 1)[1].split(op)[0].strip())
    return sorted(gathers)


def _value(v):
    return np.array(keras.ops.convert_to_numpy(v))


def _reference(opt, model):
    """The model variable an optimizer variable belongs to (slot,
    accumulator, average: created from it, named after its path), or None."""
    best = None
    for variable in model.weights:
        prefix = variable.path.replace("/", "_") + "_"
        if opt.name.startswith(prefix) and opt.shape == variable.shape:
            if best is None or len(variable.path) > len(best.path):
                best = variable
    return best


def placement(model, optimizer):
    """Counts of the optimizer variables sharded like their variable and of
    the replicated ones (scalars, the multipliers' vector), the paths of
    those that are neither, and the number of sharded weights."""
    mismatched, per_variable, replicated = [], 0, 0
    for v in optimizer.variables:
        sharding = v.value.sharding
        if v.shape == () or v.name == "lr_scales":
            replicated += 1
            if not sharding.is_fully_replicated:
                mismatched.append(v.path)
            continue
        ref = _reference(v, model)
        if ref is None or not sharding.is_equivalent_to(ref.value.sharding, len(v.shape)):
            mismatched.append(v.path)
        else:
            per_variable += 1
    sharded = sum(not w.value.sharding.is_fully_replicated for w in model.weights)
    return {"per_variable": per_variable, "replicated": replicated,
            "mismatched": mismatched, "sharded_weights": sharded}


def train(distribution, initial=None):
    """Five real steps through `fit` (ten batches, two per real step)."""
    keras.distribution.set_distribution(distribution)
    try:
        model = transformer()
        if initial is not None:
            model.set_weights(initial)
        initial = [_value(w) for w in model.weights]
        opt = layerwise_optimizer(model)
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        x, y = data()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        result = {
            "initial": initial,
            "weights": [_value(w) for w in model.weights],
            "averages": [_value(a) for _, a in opt.ema_pairs()],
            "state": [_value(v) for v in opt.variables],
            "iterations": int(_value(opt.iterations)),
            "clipped_norm": opt.diagnostics()["grad_norm/clip"],
            "warnings": [str(w.message).splitlines()[0] for w in caught],
            "frozen_paths": [w.path for w in model.weights if w.path.startswith("block_0/")],
            "paths": [w.path for w in model.weights],
        }
        if distribution is not None:
            result["placement"] = placement(model, opt)
            result["reloaded"] = reloaded_state_diff(model, opt)
            result["gathers"] = all_gathers(fitted_step(model, distribution).as_text())
            result["sharded_shapes"] = sorted({
                tuple(w.shape) for w in model.weights if not w.value.sharding.is_fully_replicated})
        return result
    finally:
        keras.distribution.set_distribution(None)


def reloaded_state_diff(model, optimizer):
    """Saves the sharded model to a `.keras` file, loads it on one device
    (no distribution): the largest difference of any weight or optimizer
    variable."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        distribution = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            loaded = keras.models.load_model(path, custom_objects={"Block": Block})
        finally:
            keras.distribution.set_distribution(distribution)
    return max(
        _max_diff([_value(w) for w in model.weights], [_value(w) for w in loaded.weights]),
        _max_diff([_value(v) for v in optimizer.variables],
                  [_value(v) for v in loaded.optimizer.variables]),
    )


def plain_gathers():
    """All-gathers of the plain optimizer's compiled step on the same
    sharded model, the block the rules freeze made non-trainable by hand."""
    distribution = model_parallel()
    keras.distribution.set_distribution(distribution)
    try:
        model = transformer()
        model.get_layer("block_0").trainable = False
        model.compile(plain_optimizer(),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        return all_gathers(compiled_step(model, distribution).as_text())
    finally:
        keras.distribution.set_distribution(None)


def _max_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))


def main():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 8, devices
    single = train(None)
    keras.backend.clear_session()
    parallel = train(model_parallel(), initial=single["initial"])
    keras.backend.clear_session()
    plain = plain_gathers()

    frozen = [single["paths"].index(p) for p in single["frozen_paths"]]
    print("devices", len(devices))
    print("initial_max_abs_diff", _max_diff(single["initial"], parallel["initial"]))
    print("iterations", single["iterations"], parallel["iterations"])
    print("frozen_moved", _max_diff([parallel["weights"][i] for i in frozen],
                                    [parallel["initial"][i] for i in frozen]))
    # `clip_by_global_norm(CLIP)` binds: the clipped group's norm is CLIP.
    print("clipped_norm", single["clipped_norm"], parallel["clipped_norm"])
    print("max_abs_diff", _max_diff(single["weights"], parallel["weights"]))
    print("ema_max_abs_diff", _max_diff(single["averages"], parallel["averages"]))
    print("optimizer_state_max_abs_diff", _max_diff(single["state"], parallel["state"]))
    print("placement", parallel["placement"])
    print("reloaded_max_abs_diff", parallel["reloaded"])
    print("warnings", parallel["warnings"])
    print("sharded_shapes", parallel["sharded_shapes"])
    print("all_gathers_plain", plain)
    print("all_gathers_layerwise", parallel["gathers"])


if __name__ == "__main__":
    main()
