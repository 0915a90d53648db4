"""The plan: rules merged into per-variable settings, computed once at build.

Data flows one way: rules (selection) -> plan (what each variable gets) ->
stages (read the plan; never re-match during a step). The plan is also
what `LayerwiseOptimizer.summary()` prints, so what is shown is what runs.
"""

import dataclasses


def path_of(variable):
    """`variable.path`; a raw `tf.Variable` (which Keras' TensorFlow
    optimizers accept too) has none, and goes by its name."""
    return getattr(variable, "path", None) or variable.name


# An optimizer index: 0 is the inner optimizer, `k` the `k`-th distinct
# optimizer given by rules (`Rule(optimizer=...)`), in rule order.
DEFAULT = 0


@dataclasses.dataclass(frozen=True)
class VariablePlan:
    """What one variable gets.

    Attributes:
        variable: The model variable.
        rules: Names of the rules that match it, in rule order.
        optimizer: Which optimizer's update rule, learning rate and decay it
            follows (see `DEFAULT`): the last matching rule's `optimizer`.
        scale_rules: Indices of the matching rules that set `lr_scale`;
            the variable's multiplier is the product of theirs.
        weight_decay: The decay coefficient a rule overrides it with, or
            `None` to decay as its optimizer does.
        frozen: Whether the variable is left untouched (and slot-free).
        transform_rules: Indices of the matching rules that have gradient
            transforms, in the order they are applied.
        updater: Which optimizer holds its slots: `optimizer`, or one
            created when the variable was unfrozen at runtime (a fresh
            optimizer of the same class and configuration).
    """

    variable: object
    rules: tuple
    optimizer: int
    scale_rules: tuple
    weight_decay: object
    frozen: bool
    transform_rules: tuple
    updater: int

    @property
    def path(self):
        return path_of(self.variable)


@dataclasses.dataclass(frozen=True)
class UpdateGroup:
    """Variables that share one learning rate, one decay override and one
    optimizer holding their slots: one call of that optimizer's update (so
    on torch its fused multi-tensor kernels see the whole group)."""

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

    def positions_of_optimizer(self, optimizer):
        """Positions in `trainable` of the variables `optimizer` updates."""
        return tuple(i for i, p in enumerate(self.trainable) if p.optimizer == optimizer)


def make_plan(rules, variables, optimizer_of_rule, strict=True, updater_of=None):
    """Merges `rules` over `variables`.

    Args:
        rules: The optimizer's rules, in order.
        variables: The variables the optimizer is built on.
        optimizer_of_rule: Per rule, the index of its optimizer, or `None`
            for a rule that does not set one.
        strict: If `True`, a rule that matches no variable is an error.
        updater_of: Optional callable `(variable, optimizer) -> int`, the
            index of the optimizer holding the variable's slots (default:
            its optimizer).

    Returns:
        A `Plan`.
    """
    matched = [[] for _ in rules]
    plans = []
    for variable in variables:
        names, scale_rules, transform_rules = [], [], []
        optimizer = DEFAULT
        weight_decay = None
        frozen = False
        for index, rule in enumerate(rules):
            if not rule.matches(variable):
                continue
            matched[index].append(variable)
            names.append(rule.name)
            if optimizer_of_rule[index] is not None:
                optimizer = optimizer_of_rule[index]
            if rule.sets_lr_scale:
                scale_rules.append(index)
            if rule.weight_decay is not None:
                weight_decay = rule.weight_decay
            if rule.frozen is not None:
                frozen = rule.frozen
            if rule.gradient:
                transform_rules.append(index)
        plans.append(
            VariablePlan(
                variable=variable,
                rules=tuple(names),
                optimizer=optimizer,
                scale_rules=tuple(scale_rules),
                weight_decay=weight_decay,
                frozen=frozen,
                transform_rules=tuple(transform_rules),
                updater=updater_of(variable, optimizer) if updater_of else optimizer,
            )
        )
    if strict:
        _check_every_rule_matches(rules, matched, variables)

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


def slot_holders(plan, n_optimizers, built_on=None, fresh_paths=()):
    """The variables each rule-level optimizer holds slots for, at build.

    Args:
        plan: The plan at build.
        n_optimizers: How many rule-level optimizers there are.
        built_on: Paths each optimizer was built on when a saved optimizer
            recorded them (its plan changed after build), else `None`.
        fresh_paths: Paths of variables that fresh optimizers hold.

    Returns:
        A list, per optimizer index, of variables.
    """
    variables = [p.variable for p in plan.variables]
    if built_on is not None:
        return [[v for v in variables if path_of(v) in set(paths)] for paths in built_on]
    return [
        [p.variable for p in plan.trainable if p.optimizer == index and p.path not in fresh_paths]
        for index in range(n_optimizers)
    ]


def _check_every_rule_matches(rules, matched, variables):
    unmatched = [r for r, hits in zip(rules, matched) if not hits]
    if not unmatched:
        return
    sample = [v.path for v in variables[:8]]
    if len(variables) > 8:
        sample.append("...")
    selectors = "; ".join(f"{r.name}: {r.selector.describe()}" for r in unmatched)
    raise ValueError(
        f"Rules {[r.name for r in unmatched]} match no variable "
        f"({selectors}). Each rule must select at least one variable "
        "of the model (pass `strict=False` to allow rules that match "
        "nothing). A rule given a layer or variable matches that very "
        "object only: is it part of this model, and built? Variable "
        f"paths: {sample}"
    )
