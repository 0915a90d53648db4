"""Shared test configuration.

The suite runs once per backend, each in its own process, selected by the
`KERAS_BACKEND` environment variable (see `scripts/test.sh`). Tests that train
through `fit` take the `jit_compile` fixture so they run with and without
compilation wherever the backend supports both.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

# torch's `jit_compile=True` means `torch.compile`, which Keras itself marks as
# experimental and which takes minutes to compile on 2 CPU cores; the torch
# suite runs eagerly, the mode Keras uses by default on torch.
JIT_MODES = [False] if BACKEND == "torch" else [False, True]


@pytest.fixture(params=JIT_MODES, ids=lambda j: f"jit={j}")
def jit_compile(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


def only_on(*backends):
    """Skip marker for tests that apply to some backends only."""
    return pytest.mark.skipif(
        BACKEND not in backends,
        reason=f"applies to backends {backends}, running {BACKEND}",
    )
