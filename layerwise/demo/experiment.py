"""The experiment: every strategy tuned the same way, then measured on seeds.

For each strategy: its learning rate is chosen on the target validation
split (seed `seeds[0]`, ties to the lower rate) from one grid shared by
all; then every seed runs at that rate (regime "tuned") and at the grid's
highest rate (regime "high", the rate a new head would like, high enough
to damage pretrained features). The seeds, grid and budget are fixed
here, not chosen by the command line.
"""

import dataclasses
import sys

import keras
import numpy as np

from layerwise.demo import data as data_lib
from layerwise.demo import finetune
from layerwise.demo import model as model_lib
from layerwise.demo import strategies as strategies_lib

REGIMES = {
    "tuned": "each strategy at its own rate, chosen on the validation split",
    "high": "every strategy at the grid's highest rate",
}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The fixed plan of the experiment.

    Args:
        grid: Learning rates every strategy may choose from.
        seeds: Seeds of the runs; `seeds[0]` also chooses the rate.
        budget: A `finetune.Budget`, the same for every run.
        pretrain_epochs: Epochs of pretraining on the source task.
    """

    grid: tuple
    seeds: tuple
    budget: finetune.Budget
    pretrain_epochs: int


DEFAULT = Protocol(
    grid=(1e-3, 3e-3, 1e-2, 3e-2),
    seeds=(0, 1, 2, 3, 4),
    budget=finetune.Budget(labels_per_class=5, epochs=8, steps_per_epoch=10, batch_size=10),
    pretrain_epochs=15,
)
# For tests: every strategy and code path, a few steps each.
QUICK = Protocol(
    grid=(3e-3, 3e-2),
    seeds=(0,),
    budget=finetune.Budget(labels_per_class=5, epochs=1, steps_per_epoch=3, batch_size=10),
    pretrain_epochs=1,
)


@dataclasses.dataclass(frozen=True)
class StrategyResult:
    """One strategy's runs.

    `tuning` maps each rate of the grid to its run with `seeds[0]`;
    `regimes` maps each name in `REGIMES` to its runs, one per seed.
    """

    strategy: strategies_lib.Strategy
    tuning: dict
    tuned_rate: float
    regimes: dict


class _Progress:
    """One Keras progress bar per phase of a strategy, one tick per epoch.

    In a terminal the bar redraws in place; in a log, one line per phase.
    """

    def __init__(self, label, runs, epochs, verbose):
        self.verbose = verbose
        if verbose:
            # Marked: the bar's values are those of the run in progress,
            # not results.
            print(f"  progress: {label} (per-run values; results in the tables)", flush=True)
            self.bar = keras.utils.Progbar(
                runs * epochs, verbose=1 if sys.stdout.isatty() else 2,
                stateful_metrics=["lr", "val_acc", "source_acc"],
                unit_name="epoch",
            )
        self.done, self.values = 0, []

    def run_started(self, rate):
        self.values = [("lr", rate)]

    def epoch(self, val_accuracy, source_accuracy):
        self.done += 1
        if self.verbose:
            values = self.values + [("val_acc", val_accuracy), ("source_acc", source_accuracy)]
            self.bar.update(self.done, values)


def _run_all(tuner, plan, progress):
    runs = {}
    for rate, seed in plan:
        progress.run_started(rate)
        runs[(rate, seed)] = tuner.run(rate, seed, on_epoch=progress.epoch)
    return runs


def run_strategy(strategy, pretrained, digits, protocol, verbose=True):
    """Tunes one strategy's learning rate, then runs it on every seed.

    Args:
        strategy: A `Strategy`.
        pretrained: A `Pretrained`.
        digits: The `Digits` splits.
        protocol: A `Protocol`.
        verbose: Whether to draw progress bars.

    Returns:
        A `StrategyResult`.
    """
    tuner = finetune.FineTuner(strategy, pretrained, digits, protocol.budget)
    epochs, first = protocol.budget.epochs, protocol.seeds[0]
    plan = [(rate, first) for rate in protocol.grid]
    progress = _Progress(
        f"choosing the rate on validation (seed {first})", len(plan), epochs, verbose
    )
    runs = _run_all(tuner, plan, progress)
    # max() keeps the first of equals: ties go to the lower rate.
    tuned = max(protocol.grid, key=lambda rate: runs[(rate, first)].val_accuracy)
    rates = {"tuned": tuned, "high": max(protocol.grid)}
    plan = [
        (rate, seed)
        for rate in dict.fromkeys(rates.values())
        for seed in protocol.seeds
        if (rate, seed) not in runs
    ]
    progress = _Progress(
        f"{len(protocol.seeds)} seeds at {_rates_label(rates)}", len(plan), epochs, verbose
    )
    runs.update(_run_all(tuner, plan, progress))
    return StrategyResult(
        strategy=strategy,
        tuning={rate: runs[(rate, first)] for rate in protocol.grid},
        tuned_rate=tuned,
        regimes={
            name: [runs[(rate, seed)] for seed in protocol.seeds]
            for name, rate in rates.items()
        },
    )


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the report and the figure need: the backend, the
    `Protocol`, the `Digits`, the source-task accuracy before fine-tuning
    and one `StrategyResult` per strategy."""

    backend: str
    protocol: Protocol
    digits: data_lib.Digits
    source_before: float
    strategies: list


def run_experiment(protocol=DEFAULT, strategies=strategies_lib.STRATEGIES, verbose=True):
    """Pretrains once, then runs `run_strategy` for each strategy.

    Args:
        protocol: A `Protocol`.
        strategies: `Strategy`s to compare; the first is the baseline of
            the report.
        verbose: Whether to print what happens, with progress bars.

    Returns:
        A `Results`.
    """
    say = print if verbose else (lambda *args, **kwargs: None)
    digits = data_lib.load_digits()
    budget = protocol.budget
    say(
        f"Source task: digits 0-4, {len(digits.source_train)} training images "
        f"({len(digits.source_test)} held out).\n"
        f"Target task: digits 5-9 from {budget.labels_per_class} labelled images "
        f"per class; rate chosen on {len(digits.target_val)} validation images, "
        f"results on {len(digits.target_test)} test images.\n"
        f"Every run: {budget.epochs} epochs x {budget.steps_per_epoch} steps "
        f"of {budget.batch_size} images; rates {', '.join(f'{r:g}' for r in protocol.grid)}; "
        f"seeds {', '.join(map(str, protocol.seeds))}.\n",
        flush=True,
    )
    pretrained = model_lib.pretrain(digits, protocol.pretrain_epochs)
    # Measured the way every run measures it, before its first step.
    source_before = model_lib.FineTuningModel(pretrained).evaluate(
        digits.target_val, digits.source_test
    )[1]
    say(
        f"Pretrained on the source task: source test accuracy {source_before:.3f}.\n",
        flush=True,
    )
    results = []
    for index, strategy in enumerate(strategies):
        inner = getattr(strategy.inner, "__name__", str(strategy.inner))
        say(
            f"[{index + 1}/{len(strategies)}] {strategy.name} ({inner}): "
            f"{strategy.description}", flush=True,
        )
        results.append(run_strategy(strategy, pretrained, digits, protocol, verbose))
    return Results(keras.backend.backend(), protocol, digits, source_before, results)


def _rates_label(rates):
    if rates["tuned"] == rates["high"]:
        return f"{rates['tuned']:g} (tuned = highest)"
    return f"{rates['tuned']:g} (tuned) and {rates['high']:g} (highest)"


def summarize(runs, field):
    """Mean, sample standard deviation and count of `field` over `runs`."""
    values = np.array([getattr(run, field) for run in runs], dtype="float64")
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, len(values)
