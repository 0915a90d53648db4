"""What `LayerwiseOptimizer.summary()` prints and its `repr` says: the plan,
per variable, as it runs."""

from keras import ops

from layerwise._internals import optimizers as internals
from layerwise.optim import projections as projections_lib
from layerwise.optim import rules as rules_lib


def _format_number(value):
    if value is None:
        return "-"
    return f"{value:.4g}"


def _format_decay(row):
    """The WD cell: "off (rule)" when a rule turned decay off, "-" when the
    optimizer gives none (or the variable is frozen)."""
    if row["decay_set_by_rule"] and row["weight_decay"] is None:
        return "off (rule)"
    return _format_number(row["weight_decay"])


def _float(value):
    return float(ops.convert_to_numpy(value))


def summary_rows(optimizer):
    """One dict per variable: what the optimizer does to it at this step.

    Keys: `path`, `shape`, `rules`, `update` (the update rule: the class of
    the variable's optimizer, for Muon which of its paths), `lr_scale`,
    `effective_lr`, `weight_decay` (the coefficient actually applied,
    `None` for none), `decay_set_by_rule` (whether a rule's `weight_decay`
    gives that coefficient, `0.0` turning decay off, rather than the
    optimizer), `transforms` (gradient transforms), `update_transforms`,
    `projections`, `frozen` and `optimizer` (the name of the optimizer
    holding its slots). The Transforms column shows all three, update
    transforms after `update:` and projections after `project:`.
    """
    plan = optimizer.plan
    updaters = optimizer.updaters
    step = optimizer.iterations
    rules = optimizer.rules
    rows = []
    for p in plan.variables:
        updater = updaters.updaters[p.updater]
        scale = 1.0
        for index in p.scale_rules:
            scale *= _float(rules[index].scale_value(step))
        base_lr = _float(updaters.learning_rate(p.updater))
        decay = p.weight_decay
        if decay is None:
            decay = internals.decay_coefficient(updater, p.variable)
        transforms = [repr(t) for i in p.transform_rules for t in rules[i].gradient]
        update_transforms = [repr(t) for i in p.update_rules for t in rules[i].update]
        projections = [
            projections_lib.describe(t) for i in p.project_rules for t in rules[i].project
        ]
        rows.append(
            {
                "path": p.path,
                "shape": tuple(p.variable.shape),
                "rules": list(p.rules),
                "update": None if p.frozen else internals.update_rule(updater, p.variable),
                "lr_scale": None if p.frozen else scale,
                "effective_lr": None if p.frozen else base_lr * scale,
                "weight_decay": None if p.frozen else (decay or None),
                "decay_set_by_rule": not p.frozen and p.weight_decay is not None,
                "transforms": [] if p.frozen else transforms,
                "update_transforms": [] if p.frozen else update_transforms,
                "projections": [] if p.frozen else projections,
                "frozen": p.frozen,
                "optimizer": updater.name,
            }
        )
    return rows


def _transforms_cell(row):
    cells = list(row["transforms"])
    cells += [f"update:{t}" for t in row["update_transforms"]]
    cells += [f"project:{t}" for t in row["projections"]]
    return ", ".join(cells) or "-"


def print_summary(optimizer, print_fn=None):
    print_fn = print_fn or print
    rows = summary_rows(optimizer)
    header = ("Variable", "Shape", "Rules", "Update", "LR scale", "Effective LR",
              "WD", "Transforms", "Frozen")
    # The slot-holder column appears once something was unfrozen at runtime.
    show_optimizer = len(optimizer.all_optimizers()) > len(optimizer.updaters.optimizers)
    if show_optimizer:
        header += ("Slots in",)
    table = [header] + [
        (
            r["path"],
            str(r["shape"]),
            ", ".join(r["rules"]) or "-",
            r["update"] or "-",
            _format_number(r["lr_scale"]),
            _format_number(r["effective_lr"]),
            _format_decay(r),
            _transforms_cell(r),
            "yes" if r["frozen"] else "no",
        ) + ((r["optimizer"],) if show_optimizer else ())
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    frozen = sum(r["frozen"] for r in rows)
    lines = [
        describe(optimizer, with_rules=False),
        f"{len(rows)} variables, {frozen} frozen, {len(optimizer.plan.groups)} update "
        f"groups, {len(optimizer.rules)} rules",
    ]
    rule_line = "  ".join("-" * w for w in widths)
    lines.append(rule_line)
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append(rule_line)
    lines.append(rule_line)
    print_fn("\n".join(lines))


def describe(optimizer, with_rules=True):
    """One line: name, inner optimizer and its rate, step, rule
    optimizers, the stages that are on and (`with_rules`) the rule count."""
    inner = optimizer.inner_optimizer
    parts = [
        f'LayerwiseOptimizer "{optimizer.name}" over {type(inner).__name__} '
        f"(base learning rate {_format_number(_float(inner.learning_rate))}, "
        f"step {int(ops.convert_to_numpy(optimizer.iterations))})"
    ]
    others = optimizer.updaters.optimizers[1:]
    if others:
        parts.append(
            "rule optimizers: " + ", ".join(rules_lib.describe_optimizer(o) for o in others)
        )
    # Each stage says what it adds (`Stage.describe`), in pipeline order.
    stages = optimizer.pipeline.describe()
    if stages:
        parts.append(", ".join(stages))
    if with_rules:
        parts.append(f"{len(optimizer.rules)} rules")
    return "; ".join(parts)
