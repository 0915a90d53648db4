"""Keras' training, callback and saving tests the peer suite runs, and how.

Each file is loaded as the optimizer tests are (`harness.load`): an
optimizer class the file imports builds the wrapper. Most of these tests
compile with a string (`model.compile(optimizer="sgd")`) that Keras
resolves inside `Trainer.compile`; while a test of these files runs, the
trainer module's reference to `keras.src.optimizers` is the variant's
proxy (`compile_hook`), whose `get` wraps the plain optimizer it builds.
That is the only name patched, and only for the duration of a test.

Selection rule (see `docs/peer_suite.md`): a test runs if it compiles a
model with an optimizer and then trains, evaluates with a callback, saves
or loads; tests that never reach the optimizer are left out, as are a few
slow ones listed in `LEFT_OUT` with their reason.
"""

import contextlib
import inspect
import pathlib

from keras.src import optimizers as keras_optimizers
from keras.src.trainers import trainer as keras_trainer_module

from tests.optim.peer import harness

KERAS_SRC = pathlib.Path(keras_optimizers.__file__).parents[1]


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


def uses_an_optimizer(method):
    """Whether a test's source compiles a model or names an optimizer."""
    source = inspect.getsource(method)
    return "compile(" in source or "optimizer" in source
