"""`tf.train.Checkpoint` of a `LayerwiseOptimizer`: every optimizer's state
(the inner one, the rules' and those created by unfreezing) is saved and
restored, and `.keras` files still store each state once."""

import zipfile

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.train.Checkpoint is TensorFlow's"
)


def _compiled():
    model = helpers.mlp()
    optimizer = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [
            lw.Rule(model.get_layer("l0"), lr_scale=0.5, name="body"),
            lw.Rule(model.get_layer("l1"), frozen=True, name="middle"),
            lw.Rule(model.get_layer("l2"), optimizer=keras.optimizers.SGD(0.1, momentum=0.9), name="head"),
        ],
    )
    model.compile(optimizer, "mse")
    return model


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_every_optimizer_state_round_trips_through_tf_checkpoint(tmp_path):
    import tensorflow as tf

    x, y = helpers.data()
    model = _compiled()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.optimizer.set_frozen("middle", False)  # a fresh optimizer for l1
    model.make_train_function(force=True)  # retraced, as `GradualUnfreezing` does
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "ckpt"))

    restored = _compiled()
    restored.optimizer.build(restored.trainable_variables)
    restored.optimizer.set_frozen("middle", False)
    status = tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).restore(path)
    status.assert_existing_objects_matched()
    for a, b in zip(_values(model.optimizer.variables), _values(restored.optimizer.variables)):
        np.testing.assert_array_equal(a, b)

    names = [o.name for o in restored.optimizer.all_optimizers()]
    assert len(names) == 3  # inner Adam, the head's SGD, the unfrozen Adam
    # Every optimizer's state (step counts and slots), not only the inner one's.
    for saved, loaded in zip(model.optimizer.all_optimizers(), restored.optimizer.all_optimizers()):
        # Paths up to the optimizer's own auto-generated name (`adam_1`).
        assert [v.path.split("/", 1)[1] for v in saved.variables] == [
            v.path.split("/", 1)[1] for v in loaded.variables
        ]
        for a, b in zip(_values(saved.variables), _values(loaded.variables)):
            np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.all_optimizers()[1].iterations.numpy()) == 8

    # Resumed, the next epoch equals the uninterrupted run's.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(_values(model.weights), _values(restored.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_keras_file_stores_each_optimizer_state_once(tmp_path):
    import h5py

    x, y = helpers.data()
    model = _compiled()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    stored = []
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        weights["optimizer"].visititems(
            lambda name, item: stored.append(name) if isinstance(item, h5py.Dataset) else None
        )
    variables = model.optimizer.variables
    # The wrapper's own store holds every state once; tracking the rule
    # optimizers for TensorFlow checkpoints adds no copy of theirs.
    rule_slots = sum(len(o.variables) for o in model.optimizer.all_optimizers()[1:])
    own = [name for name in stored if name.startswith("vars/")]
    assert len(own) == len(variables)
    assert not any("sgd" in name for name in stored if not name.startswith("vars/")), stored
    assert rule_slots > 0
