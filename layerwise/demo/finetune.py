"""One fine-tuning run, and the compiled model that runs of a strategy share."""

import dataclasses

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
    """The measurements of one run: accuracies (fractions) on the task's
    validation and test splits after the last step."""

    strategy: str
    task: str
    learning_rate: float
    seed: int
    val_accuracy: float
    test_accuracy: float


class FineTuner:
    """Fine-tunes the pretrained network with one strategy.

    Tracing the train step costs more than a whole run of this small
    network, so runs share one compiled model: each starts from the
    pretrained weights and the optimizer's variables as they were right
    after `build` (step 0, zero slots), with the run's learning rate
    assigned. A run that changes the
    optimizer's variables or its rules (unfreezing a rule gives its
    variables a new optimizer) leaves the model stale, and the next run
    compiles afresh.

    Args:
        strategy: A `Strategy`.
        pretrained: A `Pretrained`.
        budget: A `Budget`.
    """

    def __init__(self, strategy, pretrained, budget):
        self.strategy, self.pretrained, self.budget = strategy, pretrained, budget
        self.net = self.optimizer = None
        self._initial, self._initial_rules = [], []

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

    def run(self, task, learning_rate, seed):
        """Fine-tunes once.

        Args:
            task: A `Task`.
            learning_rate: The inner optimizer's learning rate.
            seed: Seed of the labelled images and their order.

        Returns:
            A `Run`.
        """
        if self._reusable():
            for variable, value in self._initial:
                variable.assign(value)
            self.net.reset()
        else:
            self._compile(learning_rate)
        self.optimizer.learning_rate = learning_rate
        budget = self.budget
        labelled = data_lib.labelled_subset(task.pool, budget.labels_per_class, seed)
        x, y = data_lib.training_stream(
            labelled, budget.epochs * budget.steps_per_epoch, budget.batch_size, seed
        )
        self.net.model.fit(
            x, y, batch_size=budget.batch_size, epochs=budget.epochs,
            steps_per_epoch=budget.steps_per_epoch, shuffle=False, verbose=0,
            callbacks=list(self.strategy.callbacks(budget.epochs)),
        )
        return Run(
            strategy=self.strategy.name,
            task=task.name,
            learning_rate=learning_rate,
            seed=seed,
            val_accuracy=self.net.evaluate(task.val),
            test_accuracy=self.net.evaluate(task.test),
        )
