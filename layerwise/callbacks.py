"""Callbacks that change how parameters learn while `fit` runs."""

import keras

from layerwise._internals import trainers
from layerwise.lisa import LISA  # noqa: F401  (`lw.callbacks.LISA`)
from layerwise.optim import ema_swap
from layerwise.optim.optimizer import layerwise_optimizer_of


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreezes rules on a schedule of epochs (ULMFiT's gradual unfreezing).

    At the start of every epoch, each rule the schedule lists at that epoch
    or earlier is unfrozen, and each rule listed at a later epoch is frozen
    (so the rules need not be created frozen). Unfreezing goes through
    `LayerwiseOptimizer.set_frozen`: the unfrozen variables start with fresh
    optimizer state, as a new optimizer would, and the change is part of the
    optimizer's saved config. When something changed, the train function is
    re-created, which costs one retrace.

    Create the rules frozen (`Rule(..., frozen=True)`) to save the optimizer
    slots of the frozen variables until they unfreeze; rules frozen by this
    callback keep the slots the optimizer gave them at build.

    Args:
        schedule: A dict mapping an epoch (int >= 0) to the name of a rule of
            the model's `LayerwiseOptimizer`, or a list of names, to unfreeze
            at the start of that epoch.
        verbose: If `1`, prints which rules change at each epoch.

    Example:

    >>> import keras, numpy as np, layerwise as lw
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"), keras.layers.Dense(1, name="head")])
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-3),
    ...     rules=lw.layer_decay(model, decay=0.5))
    >>> model.compile(optimizer=opt, loss="mse")
    >>> unfreeze = lw.callbacks.GradualUnfreezing({0: "head", 1: "body"})
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=2, verbose=0,
    ...               callbacks=[unfreeze])
    >>> opt.get_rule("body").frozen
    False
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not isinstance(schedule, dict) or not schedule:
            raise ValueError(
                "`schedule` must be a non-empty dict mapping epochs to rule "
                f"names. Received: schedule={schedule!r}"
            )
        start = {}
        for epoch, names in schedule.items():
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(
                    "`schedule` keys must be epochs, ints >= 0. Received: "
                    f"key {epoch!r}"
                )
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, (list, tuple)) or not all(
                isinstance(n, str) and n for n in names
            ):
                raise ValueError(
                    "`schedule` values must be rule names or lists of rule "
                    f"names. Received: schedule[{epoch}]={schedule[epoch]!r}"
                )
            for name in names:
                if name in start:
                    raise ValueError(
                        f"`schedule` must list each rule once. Received rule "
                        f"{name!r} at epochs {start[name]} and {epoch}."
                    )
                start[name] = epoch
        self.schedule = dict(schedule)
        self.verbose = verbose
        self._start = start

    def on_train_begin(self, logs=None):
        optimizer = layerwise_optimizer_of(self.model)
        for name in self._start:
            optimizer.get_rule(name)  # Unknown names fail before training.

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = layerwise_optimizer_of(self.model)
        changes = []
        for name, start in self._start.items():
            frozen = epoch < start
            if bool(optimizer.get_rule(name).frozen) != frozen:
                optimizer.set_frozen(name, frozen)
                changes.append(f"{'froze' if frozen else 'unfroze'} {name!r}")
        if changes:
            # The compiled step holds the old plan; the next step retraces.
            self.model.make_train_function(force=True)
            if self.verbose:
                print(
                    f"Epoch {epoch + 1}: GradualUnfreezing {', '.join(changes)}"
                )


class SplitAccumulation(keras.callbacks.Callback):
    """Compiles gradient-accumulation micro-steps and real steps separately.

    With `accumulate_steps=k`, one compiled train step must find out at run
    time whether a batch only adds its gradients to the accumulators or
    takes the real optimizer step: a conditional over every weight, slot
    and accumulator. Under XLA (TensorFlow `jit_compile=True`, JAX) that
    conditional copies the state it carries on every micro-step, which can
    cost more than a full step (see `benchmarks/RESULTS.md`). This callback
    compiles two train functions instead, one that only accumulates and one
    that takes the real step, and calls the right one for each batch,
    counting micro-steps on the host. The results are the same as without
    it; micro-steps then cost forward, backward and one addition per
    gradient. Without the conditional, accumulation also runs under
    `tf.distribute.MirroredStrategy`, which refuses it otherwise.

    Costs one more trace (two train functions; again after anything
    re-creates the train function, e.g. `GradualUnfreezing`; a later `fit`
    with the same callback reuses them). When `fit` ends, the model's own
    train function comes back; if `fit` stops on an error (Keras then skips
    `on_train_end`), the function left in place defers to the model's own
    one whenever this callback did not count the batch.

    Requires a `LayerwiseOptimizer` with `accumulate_steps > 1`, without
    `skip_nonfinite` (a skipped step does not advance the count, which only
    the compiled step knows), and `steps_per_execution=1` (several steps
    per call would mix both kinds); otherwise `fit` fails before its first
    step.

    Example:

    >>> import keras, numpy as np, layerwise as lw
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.1), accumulate_steps=2)
    >>> model.compile(optimizer=opt, loss="mse")
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, verbose=0,
    ...               callbacks=[lw.callbacks.SplitAccumulation()])
    >>> int(opt.iterations)
    2
    """

    def __init__(self):
        super().__init__()
        self._functions = {}
        self._made_for = None
        self._armed = None

    def on_train_begin(self, logs=None):
        optimizer = layerwise_optimizer_of(self.model)
        if optimizer.accumulate_steps == 1:
            raise ValueError(
                "SplitAccumulation needs a LayerwiseOptimizer with "
                "`accumulate_steps` > 1. Received: accumulate_steps="
                f"{optimizer.accumulate_steps}"
            )
        if optimizer.skip_nonfinite:
            raise ValueError(
                "SplitAccumulation cannot be used with `skip_nonfinite=True`: "
                "a skipped step does not advance the micro-step count, and "
                "only the compiled step knows that it skipped. Received: "
                "skip_nonfinite=True"
            )
        if self.model.steps_per_execution != 1:
            raise ValueError(
                "SplitAccumulation needs `steps_per_execution=1` in "
                "`compile()`: each call of the train function must be one "
                "micro-step or one real step. Received: steps_per_execution="
                f"{self.model.steps_per_execution}"
            )
        self._optimizer = optimizer
        # Read from the optimizer at every start, so the count follows a
        # loaded model or a `fit` that stopped on an error. An optimizer
        # not built yet starts its first cycle.
        self._count = optimizer.accumulation.micro_steps_taken()

    def _is_ours(self, function):
        return any(function is f for f in self._functions.values())

    def _compiled(self, phase):
        optimizer = self._optimizer

        def wrap(function):
            def phased(*args, **kwargs):
                # The phase matters while the step traces (its first call,
                # or a retrace for new input shapes); afterwards it is inert.
                with optimizer.accumulation.traced_as(phase):
                    return function(*args, **kwargs)

            return phased

        function = trainers.make_train_function_with(self.model, wrap)

        def train_function(*args):
            if self._armed != phase:
                # Not called for a batch this callback counted (e.g. a `fit`
                # without it after one that stopped on an error): the
                # model's own function decides at run time instead.
                return self._made_for(*args)
            self._armed = None
            return function(*args)

        return train_function

    def on_train_batch_begin(self, batch, logs=None):
        current = self.model.train_function
        if not self._is_ours(current):
            # First batch, or another callback re-made the function for a
            # changed plan: make the phase functions from what Keras would
            # run now, unless they were made from it already (a later
            # `fit` reuses them without tracing again).
            if current is not self._made_for:
                self._made_for = current
                self._functions = {p: self._compiled(p) for p in ("micro", "real")}
        steps = self._optimizer.accumulate_steps
        phase = "real" if self._count == steps - 1 else "micro"
        self._count = (self._count + 1) % steps
        self._armed = phase
        self.model.train_function = self._functions[phase]

    def on_train_end(self, logs=None):
        if self._is_ours(self.model.train_function):
            self.model.train_function = self._made_for
        self._armed = None


class EvaluateWithEMA(keras.callbacks.Callback):
    """Validates (and evaluates) with the EMA weights; trains on the raw ones.

    Each time an evaluation starts (the validation at the end of each epoch
    of `fit`, or `evaluate(..., callbacks=[...])`) the averages are swapped
    in; when it ends the raw weights come back bit for bit, and training
    continues on them. `keras.callbacks.SwapEMAWeights` works with the
    wrapper too, but only where one optimizer holds every averaged variable
    (no rule with its own `optimizer=`); this callback swaps every average,
    and logs which weights each validation used.

    The averages exist from the first real optimizer step on. An evaluation
    before it (e.g. the first epoch's validation when an epoch has fewer
    batches than `accumulate_steps`) runs on the raw weights. `fit`'s epoch
    logs (`History`, later callbacks) say which weights each validation
    used: `val_ema_weights` is 1.0 for the averages, 0.0 for the raw ones.

    Example:

    >>> import keras, numpy as np, layerwise as lw
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(loss="mse",
    ...     optimizer=lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), ema=0.9))
    >>> x, y = np.ones((4, 2)), np.ones((4, 1))
    >>> history = model.fit(x, y, epochs=2, validation_data=(x, y), verbose=0,
    ...                     callbacks=[lw.callbacks.EvaluateWithEMA()])
    >>> with lw.ema_weights(model):
    ...     ema_loss = model.evaluate(x, y, verbose=0)
    >>> bool(np.isclose(history.history["val_loss"][-1], ema_loss))
    True
    """

    def __init__(self):
        super().__init__()
        self._swap = None
        self._used_averages = None

    def on_test_begin(self, logs=None):
        if self._swap is not None:
            return
        optimizer = layerwise_optimizer_of(self.model)
        self._used_averages = int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0
        if self._used_averages:
            self._swap = ema_swap.ema_weights(self.model)
            self._swap.__enter__()

    def on_test_end(self, logs=None):
        if self._swap is not None:
            swap, self._swap = self._swap, None
            swap.__exit__(None, None, None)

    def on_epoch_begin(self, epoch, logs=None):
        self._used_averages = None

    def on_epoch_end(self, epoch, logs=None):
        # Keras hands each callback a copy of the evaluation's logs, but one
        # dict of epoch logs to every callback, `History` last.
        if logs is not None and self._used_averages is not None:
            logs["val_ema_weights"] = 1.0 if self._used_averages else 0.0


class LogDiagnostics(keras.callbacks.Callback):
    """Puts the optimizer's per-rule diagnostics into `fit`'s logs.

    With `LayerwiseOptimizer(..., log=("lr", "grad_norm", "update_ratio"))`,
    adds `"<stat>/<rule>"` entries (e.g. `"grad_norm/encoder"`) to the logs
    of every batch and epoch, and `"skipped_steps"` with `skip_nonfinite`: the progress bar, `History` and every callback
    listed after this one see them. Values are those of the last real step
    (like `Progbar`'s `stateful_metrics`), not epoch means. Keras gives an
    optimizer no way to write into `fit`'s logs, hence this callback.

    Example:

    >>> import keras, numpy as np, layerwise as lw
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1),
    ...     [lw.Rule(model.get_layer("d"), lr_scale=0.5, name="d")], log=("lr",))
    >>> model.compile(optimizer=opt, loss="mse")
    >>> history = model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0,
    ...                     callbacks=[lw.callbacks.LogDiagnostics()])
    >>> round(history.history["lr/d"][0], 6)
    0.05
    """

    def on_train_begin(self, logs=None):
        optimizer = layerwise_optimizer_of(self.model)
        variables = optimizer.log_variables
        # Built once: the lookup of the variables' places in the trainer's
        # state stays out of the per-batch path.
        self._names = list(variables)
        self._read = trainers.optimizer_value_reader(self.model, list(variables.values()))
        if not variables:
            raise ValueError(
                "LogDiagnostics needs a LayerwiseOptimizer created with "
                "`log=(...)`, e.g. `log=('lr', 'grad_norm', 'update_ratio')`, "
                f"or `skip_nonfinite=True`. Received: log={optimizer.log!r}"
            )

    def _add(self, logs):
        if logs is None:
            return
        for name, value in zip(self._names, self._read()):
            logs[name] = float(keras.ops.convert_to_numpy(value))

    def on_train_batch_end(self, batch, logs=None):
        self._add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add(logs)
