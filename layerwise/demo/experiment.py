"""The experiment: every strategy tuned the same way on every target task,
then measured on seeds.

For each strategy and each target task: the learning rate is chosen on the
task's validation split from one grid shared by all: the rate with the
highest mean validation accuracy over seeds of their own (`tuning_seeds`,
so that no reported run is one that chose the rate; ties go to the lower
rate); then every reported seed runs at that rate. A shift's accuracy
for a seed is the mean over its tasks (the four corruptions of the
input-level shift; one task for the others). The seeds, grid and budget are
fixed here, not chosen by the command line.
"""

import dataclasses
import sys

import keras
import numpy as np

from layerwise.demo import data as data_lib
from layerwise.demo import finetune
from layerwise.demo import model as model_lib
from layerwise.demo import rgn_view
from layerwise.demo import strategies as strategies_lib


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The fixed plan of the experiment.

    Args:
        grid: Learning rates every strategy may choose from.
        seeds: Seeds of the reported runs.
        tuning_seeds: Seeds of the runs that choose the rate (none among
            `seeds`).
        budget: A `finetune.Budget`, the same for every run.
        pretrain_epochs: Epochs of pretraining on the source task.
    """

    grid: tuple
    seeds: tuple
    tuning_seeds: tuple
    budget: finetune.Budget
    pretrain_epochs: int


DEFAULT = Protocol(
    grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
    seeds=(0, 1, 2, 3, 4),
    tuning_seeds=(100, 101),
    budget=finetune.Budget(labels_per_class=10, epochs=4, steps_per_epoch=10, batch_size=10),
    pretrain_epochs=15,
)
# For tests: every strategy, shift and code path, a few steps each.
QUICK = Protocol(
    grid=(3e-3, 3e-2),
    seeds=(0, 1),
    tuning_seeds=(100,),
    budget=finetune.Budget(labels_per_class=2, epochs=2, steps_per_epoch=1, batch_size=10),
    pretrain_epochs=1,
)


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One strategy on one task: `tuning` maps each rate of the grid to its
    runs, one per `tuning_seeds`; `runs` holds one run per reported seed at
    `tuned_rate`."""

    task: str
    tuning: dict
    tuned_rate: float
    runs: list


@dataclasses.dataclass(frozen=True)
class Cell:
    """One strategy on one shift: a `TaskResult` per task of the shift."""

    strategy: strategies_lib.Strategy
    shift: str
    tasks: list

    def accuracies(self, split="test"):
        """Accuracy per seed on `split` ("test" or "val"), the mean over
        the shift's tasks."""
        field = {"test": "test_accuracy", "val": "val_accuracy"}[split]
        return np.mean(
            [[getattr(run, field) for run in task.runs] for task in self.tasks], axis=0
        )


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the report and the figure need.

    Args:
        backend: The Keras backend.
        protocol: The `Protocol`.
        shifts: The shifts run, names in `data.SHIFTS`.
        strategies: The `Strategy`s, the baseline first.
        source_accuracy: The pretrained network on held-out source images.
        zero_shot: `{shift: {task name: test accuracy}}` of the pretrained
            network, before fine-tuning.
        cells: `{(strategy name, shift): Cell}`.
        rgn: `{shift: {task name: {block: ratio}}}`: what Auto-RGN sees
            before its first step (`rgn_view`), on the labelled images of
            `seeds[0]`.
    """

    backend: str
    protocol: Protocol
    shifts: tuple
    strategies: tuple
    source_accuracy: float
    zero_shot: dict
    cells: dict
    rgn: dict

    def cell(self, strategy, shift):
        return self.cells[(strategy.name, shift)]

    def zero_shot_mean(self, shift):
        """The pretrained network's accuracy on `shift`, the mean over its
        tasks."""
        return float(np.mean(list(self.zero_shot[shift].values())))


class _Progress:
    """One Keras progress bar per strategy, one tick per run.

    In a terminal the bar redraws in place; in a log, one line per strategy.
    """

    def __init__(self, runs, verbose):
        self.verbose, self.done = verbose, 0
        if verbose:
            self.bar = keras.utils.Progbar(
                runs, verbose=1 if sys.stdout.isatty() else 2, unit_name="run",
                stateful_metrics=["val_acc"],
            )

    def ran(self, run):
        self.done += 1
        if self.verbose:
            self.bar.update(self.done, [("val_acc", run.val_accuracy)])


def validation(runs):
    """The mean validation accuracy of `runs`: what chooses a rate."""
    return float(np.mean([run.val_accuracy for run in runs]))


def run_task(tuner, task, protocol, progress):
    """Chooses a strategy's rate on `task`, then runs it on every seed.

    Returns:
        A `TaskResult`.
    """
    def run(rate, seed):
        result = tuner.run(task, rate, seed)
        progress.ran(result)
        return result

    tuning = {
        rate: [run(rate, seed) for seed in protocol.tuning_seeds] for rate in protocol.grid
    }
    # max() keeps the first of equals: ties go to the lower rate.
    tuned = max(protocol.grid, key=lambda rate: validation(tuning[rate]))
    runs = [run(tuned, seed) for seed in protocol.seeds]
    return TaskResult(task.name, tuning, tuned, runs)


def run_strategy(strategy, pretrained, digits, shifts, protocol, verbose=True):
    """One strategy on every task of `shifts`.

    Returns:
        `{shift: Cell}`.
    """
    tuner = finetune.FineTuner(strategy, pretrained, protocol.budget)
    tasks = sum(len(digits.shifts[shift]) for shift in shifts)
    runs = len(protocol.grid) * len(protocol.tuning_seeds) + len(protocol.seeds)
    progress = _Progress(tasks * runs, verbose)
    return {
        shift: Cell(
            strategy, shift,
            [run_task(tuner, task, protocol, progress) for task in digits.shifts[shift]],
        )
        for shift in shifts
    }


def run_experiment(protocol=DEFAULT, shifts=data_lib.SHIFTS,
                   strategies=strategies_lib.STRATEGIES, verbose=True):
    """Pretrains once, then runs every strategy on every shift.

    Args:
        protocol: A `Protocol`.
        shifts: Names in `data.SHIFTS`.
        strategies: `Strategy`s to compare; the first is the baseline of
            the report.
        verbose: Whether to print what happens, with progress bars.

    Returns:
        A `Results`.
    """
    unknown = [shift for shift in shifts if shift not in data_lib.SHIFTS]
    if unknown or not shifts:
        raise ValueError(
            f"`shifts` must be names among {data_lib.SHIFTS}. Received: shifts={shifts!r}"
        )
    say = print if verbose else (lambda *args, **kwargs: None)
    digits = data_lib.load_digits()
    budget = protocol.budget
    say(
        f"Source task: digits 0-4, {len(digits.source_train)} training images.\n"
        + "".join(
            f"Target, {data_lib.SHIFT_LABELS[shift]}: "
            + ", ".join(task.name for task in digits.shifts[shift])
            + f"; {len(digits.shifts[shift][0].val)} validation and "
            f"{len(digits.shifts[shift][0].test)} test images per task.\n"
            for shift in shifts
        )
        + f"Every run: {budget.labels_per_class} labelled images per class, "
        f"{budget.epochs} epochs x {budget.steps_per_epoch} steps of "
        f"{budget.batch_size} images; rates {', '.join(f'{r:g}' for r in protocol.grid)}; "
        f"seeds {', '.join(map(str, protocol.seeds))} (rate chosen with seeds "
        f"{', '.join(map(str, protocol.tuning_seeds))}).\n",
        flush=True,
    )
    pretrained = model_lib.pretrain(digits, protocol.pretrain_epochs)
    net = model_lib.FineTuningModel(pretrained)
    source_accuracy = net.evaluate(digits.source_test)
    zero_shot = {
        shift: {task.name: net.evaluate(task.test) for task in digits.shifts[shift]}
        for shift in shifts
    }
    say(
        f"Pretrained: {source_accuracy:.3f} on held-out source images; before "
        "fine-tuning, "
        + ", ".join(f"{shift}-level {np.mean(list(acc.values())):.3f}"
                    for shift, acc in zero_shot.items())
        + ".\n",
        flush=True,
    )
    measure = rgn_view.RelativeGradientNorms(pretrained)
    rgn = {
        shift: {
            task.name: measure(task, budget.labels_per_class, protocol.seeds[0])
            for task in digits.shifts[shift]
        }
        for shift in shifts
    }
    cells = {}
    for index, strategy in enumerate(strategies):
        say(f"[{index + 1}/{len(strategies)}] {strategy.name}: {strategy.description}",
            flush=True)
        for shift, cell in run_strategy(
            strategy, pretrained, digits, shifts, protocol, verbose
        ).items():
            cells[(strategy.name, shift)] = cell
    return Results(
        backend=keras.backend.backend(),
        protocol=protocol,
        shifts=tuple(shifts),
        strategies=tuple(strategies),
        source_accuracy=source_accuracy,
        zero_shot=zero_shot,
        cells=cells,
        rgn=rgn,
    )


def summarize(values):
    """Mean, standard error of the mean and count of `values`."""
    values = np.asarray(values, dtype="float64")
    error = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), error, len(values)
