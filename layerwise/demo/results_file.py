"""The experiment's measurements as a JSON file, and back.

`python -m layerwise.demo --save-results FILE` writes one; `--load-results
FILE` prints the report and draws the figure from one without running
anything. The README's table is the report of such a file, kept in
`tests/fixtures/` (one per backend), and a test holds the two equal.
"""

import dataclasses
import json

from layerwise.demo import experiment
from layerwise.demo import finetune
from layerwise.demo import strategies as strategies_lib

FORMAT = 1


def to_dict(results):
    """`results` (a `Results`) as JSON-ready Python values."""

    def task(result):
        return {
            "task": result.task,
            "tuned_rate": result.tuned_rate,
            "tuning": [dataclasses.asdict(run) for runs in result.tuning.values()
                       for run in runs],
            "runs": [dataclasses.asdict(run) for run in result.runs],
        }

    protocol = results.protocol
    return {
        "format": FORMAT,
        "backend": results.backend,
        "protocol": {
            "grid": list(protocol.grid),
            "seeds": list(protocol.seeds),
            "tuning_seeds": list(protocol.tuning_seeds),
            "budget": dataclasses.asdict(protocol.budget),
            "pretrain_epochs": protocol.pretrain_epochs,
        },
        "shifts": list(results.shifts),
        "strategies": [strategy.name for strategy in results.strategies],
        "source_accuracy": results.source_accuracy,
        "zero_shot": results.zero_shot,
        "rgn": results.rgn,
        "cells": [
            {"strategy": name, "shift": shift, "tasks": [task(t) for t in cell.tasks]}
            for (name, shift), cell in results.cells.items()
        ],
    }


def from_dict(values):
    """The `Results` that `to_dict` gave `values`; strategies are looked up
    by name in `strategies.STRATEGIES`."""
    if values.get("format") != FORMAT:
        raise ValueError(
            f"A demo results file must have format {FORMAT}. Received: "
            f"format={values.get('format')!r}"
        )
    by_name = {strategy.name: strategy for strategy in strategies_lib.STRATEGIES}
    unknown = [name for name in values["strategies"] if name not in by_name]
    if unknown:
        raise ValueError(
            "A demo results file must name strategies of `strategies.STRATEGIES`. "
            f"Received: strategies={unknown!r}"
        )
    protocol = values["protocol"]

    def task(item):
        tuning = {}
        for run in item["tuning"]:
            tuning.setdefault(run["learning_rate"], []).append(finetune.Run(**run))
        return experiment.TaskResult(
            task=item["task"],
            tuning=tuning,
            tuned_rate=item["tuned_rate"],
            runs=[finetune.Run(**run) for run in item["runs"]],
        )

    return experiment.Results(
        backend=values["backend"],
        protocol=experiment.Protocol(
            grid=tuple(protocol["grid"]),
            seeds=tuple(protocol["seeds"]),
            tuning_seeds=tuple(protocol["tuning_seeds"]),
            budget=finetune.Budget(**protocol["budget"]),
            pretrain_epochs=protocol["pretrain_epochs"],
        ),
        shifts=tuple(values["shifts"]),
        strategies=tuple(by_name[name] for name in values["strategies"]),
        source_accuracy=values["source_accuracy"],
        zero_shot=values["zero_shot"],
        cells={
            (item["strategy"], item["shift"]): experiment.Cell(
                by_name[item["strategy"]], item["shift"], [task(t) for t in item["tasks"]]
            )
            for item in values["cells"]
        },
        rgn=values["rgn"],
    )


def save(results, path):
    """Writes `results` to `path` as JSON."""
    with open(path, "w") as f:
        json.dump(to_dict(results), f, separators=(",", ":"))
        f.write("\n")


def load(path):
    """The `Results` saved in `path`."""
    with open(path) as f:
        return from_dict(json.load(f))
