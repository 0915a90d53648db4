"""The demo's figure: both tasks per strategy, the rate chosen, the curves."""

import os

import numpy as np

from layerwise.demo import experiment

_STYLES = {"tuned": dict(marker="o", linestyle="-"), "high": dict(marker="s", linestyle="--")}


def _curve(runs, field):
    curves = np.array([getattr(run, field) for run in runs], dtype="float64")
    return curves.mean(axis=0)


def plot(results, path):
    """Writes a 2x2 PNG figure of `results` to `path`.

    Top left: target vs source accuracy per strategy (mean ± std over
    seeds), filled at the tuned rate, hollow at the highest rate. Top
    right: validation accuracy over the grid while choosing the rate.
    Bottom: target validation and source accuracy over the epochs (mean
    over seeds), solid at the tuned rate, dashed at the highest rate.

    Args:
        results: A `Results`.
        path: Where to write the PNG; missing folders are created.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    protocol = results.protocol
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    (both, tuning), (target, source) = axes
    epochs = np.arange(protocol.budget.epochs + 1)
    for color, result in zip(colors, results.strategies):
        name = result.strategy.name
        for regime, style in _STYLES.items():
            runs = result.regimes[regime]
            if regime != "tuned" and runs == result.regimes["tuned"]:
                continue  # Tuned at the highest rate: drawn once, as tuned.
            t_mean, t_std, _ = experiment.summarize(runs, "test_accuracy")
            s_mean, s_std, _ = experiment.summarize(runs, "source_accuracy")
            both.errorbar(
                t_mean, s_mean, xerr=t_std, yerr=s_std, color=color,
                marker=style["marker"], markersize=8, capsize=3,
                markerfacecolor=color if regime == "tuned" else "white",
                label=name if regime == "tuned" else None,
            )
            label = f"{name} ({regime}, {runs[0].learning_rate:g})"
            target.plot(epochs, _curve(runs, "val_curve"), color=color,
                        linestyle=style["linestyle"], label=label)
            source.plot(epochs, _curve(runs, "source_curve"), color=color,
                        linestyle=style["linestyle"])
        rates = list(protocol.grid)
        tuning.plot(rates, [result.tuning[r].val_accuracy for r in rates],
                    color=color, marker="o", label=name)
        tuning.plot([result.tuned_rate], [result.tuning[result.tuned_rate].val_accuracy],
                    color=color, marker="*", markersize=16)
    for ax in (both, source):
        ax.axhline(results.source_before, color="gray", linestyle=":", linewidth=1)
    both.set(xlabel="target accuracy (digits 5-9, test)",
             ylabel="source task kept (digits 0-4, source head)",
             title="Both tasks after fine-tuning (dotted: before)\n"
             "filled: tuned rate, hollow: highest rate; bars: std over seeds")
    both.legend(loc="lower left", fontsize=8)
    tuning.set(xscale="log", xlabel="learning rate (the head's)",
               ylabel=f"target validation accuracy (seed {protocol.seeds[0]})",
               title="Choosing the rate (star: chosen)")
    target.set(xlabel="epoch", ylabel="target validation accuracy",
               title="Learning the target (solid: tuned, dashed: highest rate)")
    target.legend(fontsize=7, ncol=2)
    source.set(xlabel="epoch", ylabel="source task kept",
               title="Forgetting the source (solid: tuned, dashed: highest rate)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    budget = protocol.budget
    fig.suptitle(
        f"Fine-tuning a CNN pretrained on digits 0-4 to digits 5-9 from "
        f"{budget.labels_per_class} labels per class; "
        f"{len(protocol.seeds)} seeds, {results.backend}"
    )
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
