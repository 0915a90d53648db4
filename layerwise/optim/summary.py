"""The table `LayerwiseOptimizer.summary()` prints: the plan, per variable."""

from keras import ops


def _format_number(value):
    if value is None:
        return "-"
    return f"{value:.4g}"


def plan_rows(optimizer):
    """One dict per variable: what the optimizer does to it at this step."""
    plan = optimizer.plan
    step = optimizer.iterations
    base_lr = float(ops.convert_to_numpy(optimizer.learning_rate))
    rules = optimizer.rules
    rows = []
    for p in plan.variables:
        scale = 1.0
        for index in p.scale_rules:
            scale *= float(ops.convert_to_numpy(rules[index].scale_value(step)))
        transforms = [repr(t) for i in p.transform_rules for t in rules[i].gradient]
        rows.append(
            {
                "path": p.path,
                "shape": tuple(p.variable.shape),
                "rules": list(p.rules),
                "lr_scale": None if p.frozen else scale,
                "effective_lr": None if p.frozen else base_lr * scale,
                "weight_decay": None if p.frozen else p.weight_decay,
                "transforms": [] if p.frozen else transforms,
                "frozen": p.frozen,
                # Which optimizer holds its slots: the inner one, or the
                # fresh one created when it was unfrozen at runtime.
                "optimizer": optimizer.updater_name(p.updater),
            }
        )
    return rows


def print_summary(optimizer, print_fn=None):
    print_fn = print_fn or print
    rows = plan_rows(optimizer)
    header = ("Variable", "Shape", "Rules", "LR scale", "Effective LR",
              "WD", "Transforms", "Frozen")
    # The slot-holder column appears once something was unfrozen at runtime.
    show_optimizer = len({r["optimizer"] for r in rows}) > 1
    if show_optimizer:
        header += ("Optimizer",)
    table = [header] + [
        (
            r["path"],
            str(r["shape"]),
            ", ".join(r["rules"]) or "-",
            _format_number(r["lr_scale"]),
            _format_number(r["effective_lr"]),
            _format_number(r["weight_decay"]),
            ", ".join(r["transforms"]) or "-",
            "yes" if r["frozen"] else "no",
        ) + ((r["optimizer"],) if show_optimizer else ())
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    inner = optimizer.inner_optimizer
    plan = optimizer.plan
    frozen = sum(r["frozen"] for r in rows)
    lines = [
        f'LayerwiseOptimizer "{optimizer.name}" over '
        f"{type(inner).__name__} (base learning rate "
        f"{_format_number(float(ops.convert_to_numpy(inner.learning_rate)))}"
        f", step {int(ops.convert_to_numpy(optimizer.iterations))})",
        f"{len(rows)} variables, {frozen} frozen, {len(plan.groups)} update "
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
