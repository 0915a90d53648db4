"""The plan: rules merged into per-variable settings, computed once at build.

Data flows one way: rules (selection) -> plan (what each variable gets) ->
update (reads the plan; never re-matches during a step). The plan is also
what `LayerwiseOptimizer.summary()` prints, so what is shown is what runs.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class VariablePlan:
    """What one variable gets.

    Attributes:
        variable: The model variable.
        rules: Names of the rules that match it, in rule order.
        scale_rules: Indices of the matching rules that set `lr_scale`;
            the variable's multiplier is the product of theirs.
        weight_decay: Decoupled weight-decay coefficient, or `None`.
        frozen: Whether the variable is left untouched (and slot-free).
        transform_rules: Indices of the matching rules that have gradient
            transforms, in the order they are applied.
        updater: Which optimizer holds the variable's slots: 0 for the inner
            optimizer, `k` for the `k`-th set of variables unfrozen at
            runtime (each gets a fresh optimizer of the inner's class).
    """

    variable: object
    rules: tuple
    scale_rules: tuple
    weight_decay: object
    frozen: bool
    transform_rules: tuple
    updater: int = 0

    @property
    def path(self):
        return self.variable.path


@dataclasses.dataclass(frozen=True)
class UpdateGroup:
    """Variables that share one learning rate, one decay coefficient and
    one optimizer holding their slots.

    Each group is one call of that optimizer's update, so on torch the
    fused multi-tensor kernels still see whole groups.
    """

    updater: int
    scale_rules: tuple
    weight_decay: object
    indices: tuple  # positions in `Plan.trainable`


@dataclasses.dataclass(frozen=True)
class Plan:
    variables: tuple  # VariablePlan for every variable, in build order
    trainable: tuple  # the non-frozen VariablePlans, in build order
    groups: tuple  # UpdateGroups partitioning `trainable`
    transform_steps: tuple  # (rule index, positions in `trainable`), in rule order

    def trainable_variables(self):
        return [p.variable for p in self.trainable]


def make_plan(rules, variables, default_weight_decay, strict=True, updater_of=None):
    """Merges `rules` over `variables`.

    Args:
        rules: The optimizer's rules, in order.
        variables: The variables the optimizer is built on.
        default_weight_decay: Callable `variable -> float or None`, the inner
            optimizer's own decay for a variable.
        strict: If `True`, a rule that matches no variable is an error.
        updater_of: Optional callable `variable -> int`, the optimizer that
            holds the variable's slots (default: 0, the inner optimizer).

    Returns:
        A `Plan`.
    """
    matched = [[] for _ in rules]
    plans = []
    for variable in variables:
        names, scale_rules, transform_rules = [], [], []
        weight_decay = default_weight_decay(variable)
        frozen = False
        for index, rule in enumerate(rules):
            if not rule.matches(variable):
                continue
            matched[index].append(variable)
            names.append(rule.name)
            if rule._lr_scale is not None:
                scale_rules.append(index)
            if rule.weight_decay is not None:
                weight_decay = rule.weight_decay or None
            if rule.frozen is not None:
                frozen = rule.frozen
            if rule.gradient:
                transform_rules.append(index)
        plans.append(
            VariablePlan(
                variable=variable,
                rules=tuple(names),
                scale_rules=tuple(scale_rules),
                weight_decay=weight_decay,
                frozen=frozen,
                transform_rules=tuple(transform_rules),
                updater=updater_of(variable) if updater_of else 0,
            )
        )
    if strict:
        unmatched = [r for r, hits in zip(rules, matched) if not hits]
        if unmatched:
            sample = [v.path for v in variables[:8]]
            if len(variables) > 8:
                sample.append("...")
            selectors = "; ".join(
                f"{r.name}: {r.selector.describe()}" for r in unmatched
            )
            raise ValueError(
                f"Rules {[r.name for r in unmatched]} match no variable "
                f"({selectors}). Each rule must select at least one variable "
                "of the model (pass `strict=False` to allow rules that match "
                "nothing). A rule given a layer or variable matches that very "
                "object only: is it part of this model, and built? Variable "
                f"paths: {sample}"
            )

    trainable = tuple(p for p in plans if not p.frozen)
    groups = {}
    for position, p in enumerate(trainable):
        key = (p.updater, p.scale_rules, p.weight_decay)
        groups.setdefault(key, []).append(position)
    transform_steps = []
    for index, rule in enumerate(rules):
        if not rule.gradient:
            continue
        positions = tuple(
            i for i, p in enumerate(trainable) if index in p.transform_rules
        )
        if positions:
            transform_steps.append((index, positions))
    return Plan(
        variables=tuple(plans),
        trainable=trainable,
        groups=tuple(
            UpdateGroup(
                updater=k[0], scale_rules=k[1], weight_decay=k[2], indices=tuple(v)
            )
            for k, v in groups.items()
        ),
        transform_steps=tuple(transform_steps),
    )
