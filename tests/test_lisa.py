"""LISA: which blocks train in each period, fresh state for a returning
block, the optimizer's memory (by hand formula, against full AdamW on a
tiny keras-hub GPT-2), resuming from a saved model, and bad input."""

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.lisa import sample_blocks
from tests import helpers
from tests.conftest import BACKEND

N_BLOCKS, WIDTH = 4, 4
# Where `jit_compile` is not the point, each backend's cheapest mode: every
# change of the selection retraces the step, which JAX compiles faster than
# it runs op by op, and TensorFlow runs eagerly faster than it traces.
CHEAPEST = dict(jit_compile=BACKEND == "jax", run_eagerly=BACKEND == "tensorflow")


def _toy():
    """embed, layer_0..layer_3, head: four middle blocks of 4 * 4 + 4."""
    # Zeros, then NumPy's draws: JAX compiles Keras' random initializers
    # once per shape, seconds on the suite's CPUs.
    zeros = dict(kernel_initializer="zeros")
    inputs = keras.Input((WIDTH,))
    x = keras.layers.Dense(WIDTH, name="embed", **zeros)(inputs)
    for i in range(N_BLOCKS):
        x = keras.layers.Dense(WIDTH, activation="tanh", name=f"layer_{i}", **zeros)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head", **zeros)(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape) / 2 for w in model.weights])
    return model


def _compiled(model, modes=None, **kwargs):
    opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(0.01), lw.lisa_rules(model), **kwargs)
    model.compile(optimizer=opt, loss="mse", **(modes or CHEAPEST))
    return opt


def _data(n=12):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, WIDTH)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def _slot_bytes(opt):
    """Bytes of the optimizer's per-variable state (every variable of
    rank >= 1; the rest are step counters and learning rates)."""
    return sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in opt.variables if len(v.shape)
    )


def test_sample_blocks_draws_without_replacement_per_period():
    draws = [sample_blocks(7, period, 10, 3) for period in range(50)]
    assert all(len(set(d)) == 3 and all(0 <= i < 10 for i in d) for d in draws)
    assert draws == [sample_blocks(7, period, 10, 3) for period in range(50)]  # seeded
    counts = np.bincount(np.concatenate(draws), minlength=10)
    assert counts.min() > 0 and len({tuple(d) for d in draws}) > 10  # not a fixed pick


def _iterations_of(opt, model, rule_name):
    layer = model.get_layer(f"layer_{int(rule_name.rsplit('_', 1)[1]) - 1}")
    return int(keras.ops.convert_to_numpy(opt.optimizer_of(layer.kernel).iterations))


def test_each_period_trains_embedding_head_and_the_drawn_blocks(jit_compile):
    """One epoch = one period (interval 2, 2 batches): between two epochs
    exactly the embedding, the head and the drawn blocks move; the slots
    are those of these variables only, every period; a block drawn again
    keeps its optimizer, a new one gets a fresh one."""
    model = _toy()
    opt = _compiled(model, dict(jit_compile=jit_compile))
    x, y = _data(n=8)
    snapshots, slots, selections = [helpers.weights(model)], [], []
    lisa = lw.callbacks.LISA(gamma=2, interval=2, seed=3)

    def record(epoch, logs):
        snapshots.append(helpers.weights(model))
        slots.append(_slot_bytes(opt))
        selections.append(lisa.selection)

    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[lisa, keras.callbacks.LambdaCallback(on_epoch_end=record)])
    # Weights in order: embed, layer_0..3, head (kernel, bias each).
    block_params = WIDTH * WIDTH + WIDTH
    for period in range(2):
        drawn = sample_blocks(3, period, N_BLOCKS, 2)
        assert drawn == [[0, 2], [1, 2]][period]
        assert selections[period] == [f"lisa_block_{i + 1}" for i in drawn]
        moved = [not np.array_equal(a, b) for a, b in zip(snapshots[period], snapshots[period + 1])]
        expected = [True, True]
        for i in range(N_BLOCKS):
            expected += [i in drawn] * 2
        assert moved == expected + [True, True]
        # AdamW's m and v for the embedding, the head and 2 blocks.
        trained = block_params + (WIDTH + 1) + 2 * block_params
        assert slots[period] == 2 * 4 * trained
    assert _iterations_of(opt, model, "lisa_block_3") == 4  # drawn twice: kept
    assert _iterations_of(opt, model, "lisa_block_2") == 2  # new in period 1
    # The inner AdamW (embedding, head) and one optimizer per trained block.
    assert len(opt.all_optimizers()) == 3


def _gemma():
    """The tiny Gemma of `tests/recipes/test_no_decay.py` (one compile of
    its initializers per suite on JAX)."""
    keras_hub = pytest.importorskip("keras_hub")
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=32, head_dim=8)


def test_optimizer_state_against_full_adamw_on_a_keras_hub_decoder():
    """Tiny Gemma (2 decoder blocks, hidden 16, 2 query heads and 1
    key-value head of 8, gated FFN of 32 / 2): AdamW's slots are 2 float32
    per trained parameter; LISA's are those of the embedding, the final
    norm and `gamma` blocks, whichever blocks are drawn."""
    h, heads, kv_heads, head_dim, ffn, vocab, layers = 16, 2, 1, 8, 32 // 2, 100, 2
    embedding = vocab * h  # tied: also the output projection
    attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim  # q, out; k, v
    block = 2 * h + attention + 3 * h * ffn  # 2 RMSNorm scales, gate, up, down
    final_norm = h
    assert (embedding, block) == (1600, 1568)

    model = _gemma()
    assert model.count_params() == embedding + layers * block + final_norm
    full = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3))
    full.build(model.trainable_variables)
    assert _slot_bytes(full) == 8 * (embedding + layers * block + final_norm) == 38_016

    opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3), lw.lisa_rules(model))
    model.compile(optimizer=opt, loss="mse")
    opt.build(model.trainable_variables)
    assert _slot_bytes(opt) == 8 * (embedding + final_norm) == 12_928  # before any draw
    # The callback's calls as `fit` makes them, without training steps.
    lisa = lw.callbacks.LISA(gamma=1, interval=1, seed=2)
    lisa.set_model(model)
    lisa.on_train_begin()
    sizes, selections = [], []
    for step in range(4):
        lisa.on_train_batch_begin(step)
        sizes.append(_slot_bytes(opt))
        selections.append(lisa.selection)
        lisa.on_train_batch_end(step)
    assert len(set(map(tuple, selections))) == 2  # the draws changed the block
    assert sizes == [8 * (embedding + final_norm + block)] * 4 == [25_472] * 4


def _fit(model, epochs, lisa_args, initial_epoch=0):
    x, y = _data(n=9)
    model.fit(x, y, batch_size=3, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
              verbose=0, callbacks=[lw.callbacks.LISA(**lisa_args)])


def test_resumed_run_samples_and_trains_as_an_uninterrupted_one(tmp_path):
    """3 steps per epoch, a draw every 2 steps: the save after epoch 1
    (step 3) falls inside the second period, and the resumed epoch
    finishes it and draws the third."""
    args = dict(gamma=2, interval=2, seed=0)  # draws [2, 3], [1, 3], [0, 2]
    full = _toy()
    _compiled(full)
    _fit(full, 2, args)

    keras.backend.clear_session()
    first = _toy()
    _compiled(first)
    _fit(first, 1, args)
    path = str(tmp_path / "lisa.keras")
    first.save(path)
    resumed = keras.models.load_model(path)
    saved = [r.name for r in resumed.optimizer.rules if r.frozen is False]
    assert saved == [f"lisa_block_{i + 1}" for i in sample_blocks(0, 1, N_BLOCKS, 2)]
    _fit(resumed, 2, args, initial_epoch=1)
    helpers.assert_weights_close(helpers.weights(resumed), helpers.weights(full), rtol=1e-6, atol=1e-7)
    # Block 2 trained in period 0, left in 1 and returned in 2: fresh state.
    assert [_iterations_of(o, m, "lisa_block_3") for o, m in
            [(full.optimizer, full), (resumed.optimizer, resumed)]] == [2, 2]
    assert [len(o.variables) for o in resumed.optimizer.all_optimizers()] == [
        len(o.variables) for o in full.optimizer.all_optimizers()
    ]


def test_bad_arguments_fail_early_in_keras_form():
    with pytest.raises(ValueError, match=r"`gamma` must be an integer >= 1. Received: gamma=0"):
        lw.callbacks.LISA(gamma=0)
    with pytest.raises(ValueError, match=r"`interval` must be an integer >= 1. Received: interval=True"):
        lw.callbacks.LISA(interval=True)
    with pytest.raises(ValueError, match=r"`seed` must be an integer >= 0. Received: seed=-1"):
        lw.callbacks.LISA(seed=-1)
    two = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="at least one middle block"):
        lw.lisa_rules(two)
    with pytest.raises(TypeError, match="`blocks` must be a list of blocks"):
        lw.lisa_rules(two, blocks=["dense"])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(rules=False), "needs the rules of `layerwise.lisa_rules"),
        (dict(gamma=5), "`gamma` must be at most the number of middle blocks, 4"),
        (dict(accumulate_steps=2), "Received: accumulate_steps=2"),
    ],
    ids=["no-rules", "gamma", "accumulation"],
)
def test_unusable_optimizer_fails_before_training(options, message):
    model = _toy()
    rules = lw.lisa_rules(model) if options.pop("rules", True) else []
    gamma = options.pop("gamma", 1)
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.AdamW(), rules, **options),
                  loss="mse")
    before = helpers.weights(model)
    x, y = _data(n=4)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, verbose=0, callbacks=[lw.callbacks.LISA(gamma=gamma)])
    helpers.assert_weights_close(helpers.weights(model), before, rtol=0, atol=0)
