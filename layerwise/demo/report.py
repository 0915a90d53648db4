"""The demo's printed report: the tables and what they say, as measured."""

import math
import textwrap

from layerwise.demo import experiment

METRICS = {
    "test_accuracy": "target accuracy",
    "source_accuracy": "source task kept",
}
# A difference counts when it exceeds this many standard errors of the
# difference of the two means; smaller ones are called within noise.
_STANDARD_ERRORS = 2.0


def _pm(mean, std):
    return f"{mean:.3f} ± {std:.3f}"


def tuning_table(results):
    """Validation accuracy of every rate of the grid (seed 0), `*` on the
    chosen one."""
    grid = results.protocol.grid
    lines = [
        f"Choosing the rate: target validation accuracy, seed "
        f"{results.protocol.seeds[0]} (* = chosen)",
        f"{'strategy':<20}" + "".join(f"{rate:>9.0e}" for rate in grid),
    ]
    for result in results.strategies:
        cells = "".join(
            f"{result.tuning[rate].val_accuracy:>8.3f}"
            + ("*" if rate == result.tuned_rate else " ")
            for rate in grid
        )
        lines.append(f"{result.strategy.name:<20}{cells}".rstrip())
    return "\n".join(lines)


def regime_table(results, regime):
    """One row per strategy: rate, accuracies (mean ± std over seeds), time
    per step and optimizer state in the given regime."""
    seeds = len(results.protocol.seeds)
    lines = [
        f"{regime}: {experiment.REGIMES[regime]} (mean ± std over {seeds} seeds)",
        f"{'strategy':<20}{'rate':>7}{'target acc':>16}{'source acc':>16}"
        f"{'ms/step':>9}{'optimizer state':>17}",
    ]
    for result in results.strategies:
        runs = result.regimes[regime]
        if regime != "tuned" and runs == result.regimes["tuned"]:
            # Its tuned rate is this one: the same runs, not a second result.
            lines.append(
                f"{result.strategy.name:<20}{runs[0].learning_rate:>7.0e}"
                "   the tuned runs above (its tuned rate is this one)"
            )
            continue
        target = experiment.summarize(runs, "test_accuracy")
        source = experiment.summarize(runs, "source_accuracy")
        ms = experiment.summarize(runs, "ms_per_step")[0]
        state = max(run.state_size for run in runs)
        lines.append(
            f"{result.strategy.name:<20}{runs[0].learning_rate:>7.0e}"
            f"{_pm(*target[:2]):>16}{_pm(*source[:2]):>16}{ms:>9.1f}{state:>17,}"
        )
    return "\n".join(lines)


def compare(runs, baseline, field):
    """`"better"`, `"worse"` or `"within noise"`, and the difference of the
    means of `field` between `runs` and `baseline`."""
    m1, s1, n1 = experiment.summarize(runs, field)
    m0, s0, n0 = experiment.summarize(baseline, field)
    difference = m1 - m0
    error = math.sqrt(s1**2 / n1 + s0**2 / n0)
    if abs(difference) <= _STANDARD_ERRORS * error or difference == 0:
        return "within noise", difference
    return ("better" if difference > 0 else "worse"), difference


_REGIME_LABELS = {"tuned": "tuned rates", "high": "highest rate"}


def verdict(results):
    """Which strategies beat the first one (the baseline), per regime and
    metric, and by how much; says so when none does."""
    baseline, others = results.strategies[0], results.strategies[1:]
    lines = [
        f"Against {baseline.strategy.name} (better or worse: a difference of the "
        f"means beyond {_STANDARD_ERRORS:g} standard errors; else within noise):"
    ]
    for regime in experiment.REGIMES:
        for index, (field, label) in enumerate(METRICS.items()):
            groups = {"better": [], "within noise": [], "worse": []}
            for result in others:
                outcome, difference = compare(
                    result.regimes[regime], baseline.regimes[regime], field
                )
                groups[outcome].append(f"{result.strategy.name} {difference:+.3f}")
            parts = [f"{k}: {', '.join(v)}" for k, v in groups.items() if v]
            if not groups["better"]:
                parts.insert(0, "none better")
            head = _REGIME_LABELS[regime] if index == 0 else ""
            lines.append(f"  {head:<14}{label:<18}{'; '.join(parts)}")
    return "\n".join(lines)


def when_to_use(results):
    """Which strategy to reach for, read off the measured tables by one
    stated rule (a difference beyond 2 standard errors), printed first."""
    baseline = results.strategies[0]
    name = baseline.strategy.name
    lines = [
        "When to use which, from the tables below (a difference counts beyond "
        f"{_STANDARD_ERRORS:g} standard errors of the difference of the means; "
        f"{len(results.protocol.seeds)} seeds):"
    ]
    for regime, label in (("tuned", "If you can tune the rate"),
                          ("high", "If the rate must be high (the new head's)")):
        better = {field: [] for field in METRICS}
        for result in results.strategies[1:]:
            for field in METRICS:
                outcome, difference = compare(
                    result.regimes[regime], baseline.regimes[regime], field
                )
                if outcome == "better":
                    better[field].append(f"{result.strategy.name} {difference:+.3f}")
        target = _who(better["test_accuracy"], f"beat{{s}} {name} on the target",
                      f"nothing beats {name} on the target")
        source = _who(better["source_accuracy"], "keep{s} more of the source task",
                      "none keeps more of the source task")
        lines.append(f"  {label}: {target}; {source}.")
    return "\n".join(lines)


def _who(names, verb, nobody):
    """`"a, b beat ..."`, `"a beats ..."` (`verb` with `{s}`), or `nobody`."""
    if not names:
        return nobody
    return f"{', '.join(names)} {verb.format(s='s' if len(names) == 1 else '')}"


def notes(results):
    """What the columns measure."""
    return textwrap.fill(
        "target acc: digits 5-9, test split. source acc: digits 0-4 "
        "(held out) read by the source head on the fine-tuned body; "
        f"{results.source_before:.3f} before fine-tuning. "
        "ms/step: median wall time of a training step (disturbed by anything "
        "else running on the machine). optimizer state: "
        "sum(size of v for v in optimizer.variables), at the end of a run.",
        width=88,
    )


def report(results):
    """The whole printed report, as one string."""
    tables = [regime_table(results, regime) for regime in experiment.REGIMES]
    parts = [when_to_use(results), tuning_table(results), *tables, notes(results),
             verdict(results)]
    return "\n\n".join(parts)
