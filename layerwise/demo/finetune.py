"""One fine-tuning run, and the compiled model that runs of a strategy share."""

import dataclasses
import time

import keras
import numpy as np

import layerwise as lw
from layerwise.demo import data as data_lib
from layerwise.demo import model as model_lib


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every run gets, whatever the strategy.

    Args:
        labels_per_class: Labelled target images per class.
        epochs: Epochs per run (the points of the learning curves).
        steps_per_epoch: Optimizer steps per epoch.
        batch_size: Examples per step.
    """

    labels_per_class: int
    epochs: int
    steps_per_epoch: int
    batch_size: int


@dataclasses.dataclass(frozen=True)
class Run:
    """The measurements of one run.

    Accuracies are fractions. `val_curve` and `source_curve` hold the
    target validation accuracy and the source-task accuracy before
    training and after every epoch. `ms_per_step` is the median wall time
    between the ends of consecutive steps of an epoch (the median leaves
    out the steps that trace or retrace). `state_size` is
    `sum(size of v for v in optimizer.variables)` at the end of the run.
    """

    strategy: str
    learning_rate: float
    seed: int
    val_accuracy: float
    test_accuracy: float
    source_accuracy: float
    val_curve: tuple
    source_curve: tuple
    ms_per_step: float
    state_size: int


class _Recorder(keras.callbacks.Callback):
    """Times each step; after each epoch, measures both tasks on held-out
    images."""

    def __init__(self, net, digits, on_epoch):
        super().__init__()
        self.net, self.digits, self.on_epoch = net, digits, on_epoch
        self.step_seconds, self.val, self.source = [], [], []

    def _measure(self):
        val, source = self.net.evaluate(self.digits.target_val, self.digits.source_test)
        self.val.append(val)
        self.source.append(source)

    def on_train_begin(self, logs=None):
        self._measure()

    def on_epoch_begin(self, epoch, logs=None):
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        # Reading the loss waits for the step to finish (JAX and TF
        # dispatch asynchronously), so each interval is one whole step.
        float(logs["loss"])
        now = time.perf_counter()
        if self._last is not None:
            self.step_seconds.append(now - self._last)
        self._last = now

    def on_epoch_end(self, epoch, logs=None):
        self._measure()
        if self.on_epoch:
            self.on_epoch(self.val[-1], self.source[-1])


class FineTuner:
    """Fine-tunes the pretrained network with one strategy.

    Tracing the train step costs more than a whole run of this small
    network, so runs share one compiled model: each starts from the
    pretrained body, a new head drawn from the run's seed, and the
    optimizer's variables as they were right after `build` (step 0, zero
    slots), with the run's learning rate assigned. A run that changes the
    optimizer's variables or its rules (unfreezing a rule gives its
    variables a new optimizer) leaves the model stale, and the next run
    compiles afresh.

    Args:
        strategy: A `Strategy`.
        pretrained: A `Pretrained`.
        digits: The `Digits` splits.
        budget: A `Budget`.
    """

    def __init__(self, strategy, pretrained, digits, budget):
        self.strategy, self.pretrained = strategy, pretrained
        self.digits, self.budget = digits, budget
        self.net = self.optimizer = None
        self._initial = []

    def _compile(self, learning_rate):
        self.net = model_lib.FineTuningModel(self.pretrained)
        rules = self.strategy.rules(self.net.model, self.net.blocks)
        inner = self.strategy.inner(learning_rate=learning_rate)
        self.optimizer = lw.LayerwiseOptimizer(inner, rules)
        self.net.model.compile(self.optimizer, model_lib.LOSS)
        self.optimizer.build(self.net.model.trainable_variables)
        self._initial = [
            (v, np.array(keras.ops.convert_to_numpy(v))) for v in self.optimizer.variables
        ]
        self._initial_rules = self._rule_settings()

    def _rule_settings(self):
        return [(rule.frozen, rule.lr_scale) for rule in self.optimizer.rules]

    def _reusable(self):
        if self.net is None or self._rule_settings() != self._initial_rules:
            return False
        now = self.optimizer.variables
        return len(now) == len(self._initial) and all(
            v is w for v, (w, _) in zip(now, self._initial)
        )

    def run(self, learning_rate, seed, on_epoch=None):
        """Fine-tunes once.

        Args:
            learning_rate: The inner optimizer's learning rate.
            seed: Seed of the labelled images, their order and the new head.
            on_epoch: Optional `(val_accuracy, source_accuracy) -> None`,
                called after every epoch.

        Returns:
            A `Run`.
        """
        if self._reusable():
            for variable, value in self._initial:
                variable.assign(value)
        else:
            self._compile(learning_rate)
        self.optimizer.learning_rate = learning_rate
        self.net.reset(seed)
        budget = self.budget
        labelled = data_lib.labelled_subset(
            self.digits.target_pool, budget.labels_per_class, seed
        )
        x, y = data_lib.training_stream(
            labelled, budget.epochs * budget.steps_per_epoch, budget.batch_size, seed
        )
        recorder = _Recorder(self.net, self.digits, on_epoch)
        self.net.model.fit(
            x, y, batch_size=budget.batch_size, epochs=budget.epochs,
            steps_per_epoch=budget.steps_per_epoch, shuffle=False, verbose=0,
            callbacks=[recorder] + list(self.strategy.callbacks(budget.epochs)),
        )
        test, source = self.net.evaluate(self.digits.target_test, self.digits.source_test)
        return Run(
            strategy=self.strategy.name,
            learning_rate=learning_rate,
            seed=seed,
            val_accuracy=recorder.val[-1],
            test_accuracy=test,
            source_accuracy=source,
            val_curve=tuple(recorder.val),
            source_curve=tuple(recorder.source),
            ms_per_step=1000 * float(np.median(recorder.step_seconds)),
            state_size=sum(int(np.prod(v.shape)) for v in self.optimizer.variables),
        )
