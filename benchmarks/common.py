"""What every benchmark here shares: synthetic data, alternating timing,
optimizer state bytes."""

import argparse
import statistics
import time

import keras
import numpy as np

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def classification_data(steps, batch_size, width):
    """`steps` batches of Gaussian features and labels in 0..9."""
    rng = np.random.default_rng(0)
    n = steps * batch_size
    x = rng.normal(size=(n, width)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")
    return x, y


def fit_arguments(repeats, steps, batch_size):
    """The options every `fit` benchmark takes: `--jit`, `--repeats`,
    `--steps` (per epoch) and `--batch-size`, with these defaults, and
    `--instances` (copies of each configuration, see `instance_times`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--instances", type=int, default=2)
    return parser


def add_clock_arguments(parser):
    """`--clock` (what `alternating_times` reads) and `--threads` (torch's
    intra-op threads; with `--clock cpu` one thread keeps idle spinning
    threads out of the figure)."""
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall",
        help="wall time, or the process's CPU time (all its threads), which "
        "other processes on a shared host disturb less",
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="torch only: torch.set_num_threads(THREADS)")
    return parser


def set_threads(threads):
    """Applies `--threads`; returns the intra-op thread count in use (torch),
    else `None`."""
    if keras.backend.backend() != "torch":
        if threads is not None:
            raise ValueError(
                f"`--threads` is for the torch backend only. Received: threads={threads} "
                f"on {keras.backend.backend()}"
            )
        return None
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def epoch_seconds(model, x, y, batch_size, callbacks=None):
    """Wall time of one `fit` epoch over `x`, in order, without output."""
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
              callbacks=callbacks)
    return time.perf_counter() - start


def alternating_times(runs, repeats, per_run=1, clock="wall"):
    """Times each callable in `runs` once per repeat, in alternating order
    (ABC, CBA, ...), so drifts of the machine hit all of them alike.
    `clock` is a key of `CLOCKS`.

    Returns:
        `(medians, times)`: seconds per run divided by `per_run`.
    """
    now = CLOCKS[clock]
    kinds = list(runs)
    times = {k: [] for k in kinds}
    for r in range(repeats):
        for kind in kinds if r % 2 == 0 else list(reversed(kinds)):
            start = now()
            runs[kind]()
            times[kind].append((now() - start) / per_run)
    return {k: statistics.median(v) for k, v in times.items()}, times


def state_bytes(optimizers):
    """Bytes held by the variables of one optimizer or a list of them."""
    if not isinstance(optimizers, (list, tuple)):
        optimizers = [optimizers]
    return sum(
        int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
        for o in optimizers
        for v in o.variables
    )


def instance_times(make_run, kinds, instances, repeats, per_run=1, clock="wall"):
    """Times `instances` separately built copies of each configuration,
    all alternating in one process, and keeps each configuration's best
    instance.

    Identical configurations built one after the other in one process can
    differ by far more than timing noise: on this machine four identical
    SGD models (TensorFlow XLA, 12.6M parameters) ran at 32.3, 25.1, 32.4
    and 25.7 ms per step, presumably depending on where their buffers
    landed. The spread between a configuration's own instances (the A/A
    control) says how large that effect is in a run; taking the best
    instance of each configuration compares like with like.

    Args:
        make_run: `kind -> callable` building one instance (its warm-up
            included) and returning the callable to time.
        kinds: The configurations.
        instances: Copies built of each.
        repeats, per_run, clock: As for `alternating_times`.

    Returns:
        `(best, spread)`: per kind, the lowest median over its instances,
        and `(min, max)` of its instance medians.
    """
    runs = {}
    kinds = list(kinds)
    for i in range(instances):
        # Each round builds in another order, so no configuration always
        # lands at the same place in the sequence of allocations.
        for k in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
            runs[(k, i)] = make_run(k)
    med, _ = alternating_times(runs, repeats, per_run=per_run, clock=clock)
    best, spread = {}, {}
    for k in kinds:
        values = [med[(k, i)] for i in range(instances)]
        best[k], spread[k] = min(values), (min(values), max(values))
    return best, spread


def warmed_up(kind, run, first, failed):
    """Runs `run` once (trace / compile) and returns it to be timed.

    Records the warm-up's seconds in `first[kind]`; a configuration that
    raises (a Keras anchor may fail on a backend) goes into `failed[kind]`
    with its error and is timed as a no-op, so the others still compare.
    """
    start = time.perf_counter()
    try:
        run()
    except Exception as error:
        failed[kind] = f"{type(error).__name__}: {str(error)[:200]}"
        return lambda: None
    first[kind] = time.perf_counter() - start
    return run
