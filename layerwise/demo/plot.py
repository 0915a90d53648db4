"""The demo's figure: the table as a heat map, and the block to tune per
shift."""

import os

import numpy as np

from layerwise.demo import data as data_lib
from layerwise.demo import experiment
from layerwise.demo import report


def plot(results, path):
    """Writes a PNG figure of `results` to `path`.

    Left: a heat map shift x strategy of the target accuracy (mean over
    seeds), colored by the difference from the baseline (the first
    strategy), marked `+`/`-` where the report's rule calls it better or
    worse. Right: per shift, the accuracy of tuning only block k
    (mean ± standard error over seeds), with the baseline dashed.

    Args:
        results: A `Results`.
        path: Where to write the PNG; missing folders are created.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    baseline = results.strategies[0]
    shifts, strategies = results.shifts, results.strategies
    means = np.array([
        [experiment.summarize(results.cell(s, shift).accuracies())[0] for shift in shifts]
        for s in strategies
    ])
    difference = means - means[0]
    fig, (heat, blocks) = plt.subplots(
        1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1.1, 1]}
    )
    limit = max(float(np.abs(difference).max()), 1e-3)
    winners = [report.best(results, shift) for shift in shifts]
    image = heat.imshow(difference, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(strategies)):
        for j, shift in enumerate(shifts):
            bold = strategies[i] is winners[j]
            dark = abs(difference[i, j]) > 0.6 * limit
            mark = ""
            if i:
                outcome, _ = report.compare(results.cell(strategies[i], shift).accuracies(),
                                            results.cell(baseline, shift).accuracies())
                mark = {"better": " +", "worse": " -"}.get(outcome, "")
            heat.text(j, i, f"{means[i, j]:.3f}{mark}", ha="center", va="center", fontsize=9,
                      fontweight="bold" if bold else "normal",
                      color="white" if dark else "black")
    heat.set_xticks(range(len(shifts)), [f"{s}-level" for s in shifts])
    heat.set_yticks(range(len(strategies)), [s.name for s in strategies])
    heat.set_title(f"Target accuracy (mean over {len(results.protocol.seeds)} seeds; "
                   f"bold: best; +/-: beyond {report.STANDARD_ERRORS:g} standard errors)"
                   f"\ncolor: difference from {baseline.name}")
    fig.colorbar(image, ax=heat, fraction=0.046, pad=0.04)

    surgical = report.surgical(results)
    colors = dict(zip(data_lib.SHIFTS, ("tab:blue", "tab:orange", "tab:green")))
    x = np.arange(len(surgical))
    for shift in shifts:
        stats = [experiment.summarize(results.cell(s, shift).accuracies()) for s in surgical]
        blocks.errorbar(x, [m for m, _, _ in stats], yerr=[e for _, e, _ in stats],
                        color=colors[shift], marker="o", capsize=3,
                        label=data_lib.SHIFT_LABELS[shift])
        full = experiment.summarize(results.cell(baseline, shift).accuracies())[0]
        blocks.axhline(full, color=colors[shift], linestyle="--", linewidth=1)
    blocks.set_xticks(x, [s.block for s in surgical])
    blocks.set(xlabel="the one block that trains (input side first)",
               ylabel="target accuracy (test)",
               title=f"Tune only block k (bars: standard error)\ndashed: {baseline.name}")
    blocks.grid(alpha=0.3)
    blocks.legend(fontsize=8, loc="lower right")
    budget = results.protocol.budget
    fig.suptitle(
        "Surgical fine-tuning on digits: a CNN pretrained on digits 0-4, three shifts, "
        f"{budget.labels_per_class} labels per class; {results.backend}"
    )
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
