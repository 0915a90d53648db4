"""The plan: rules merged into per-variable settings, computed once at build.

Data flows one way: rules (selection) -> plan (what each variable gets) ->
stages (read the plan; never re-match during a step). The plan is also
what `LayerwiseOptimizer.summary()` prints, so what is shown is what runs.
"""

import collections
import dataclasses
import functools


def path_of(variable):
    """`variable.path`; a raw `tf.Variable` (which Keras' TensorFlow
    optimizers accept too) has none, and goes by its name."""
    return getattr(variable, "path", None) or variable.name


# An optimizer index: 0 is the inner optimizer, `k` the `k`-th distinct
# optimizer given by rules (`Rule(optimizer=...)`), in rule order.
DEFAULT = 0

# A variable's decay when its optimizer overrides `_apply_weight_decay`:
# that rule runs at every step, at the group's rate (its coefficients are
# its own business).
OWN_DECAY_RULE = "own decay rule"


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
        decay: The decoupled weight-decay coefficient it gets (a rule's
            override, else its updater's: `exclude_from_weight_decay` and
            Muon's routing resolved), `None` for no decay, or
            `OWN_DECAY_RULE`.
        update_rules: Indices of the matching rules with update
            transforms, in rule order.
        project_rules: Indices of the matching rules with projections,
            in rule order.
    """

    variable: object
    rules: tuple
    optimizer: int
    scale_rules: tuple
    weight_decay: object
    frozen: bool
    transform_rules: tuple
    updater: int
    decay: object = OWN_DECAY_RULE
    update_rules: tuple = ()
    project_rules: tuple = ()

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
    # `((coefficient, positions), ...)`: the decay of the group's variables,
    # resolved at build; `None` when the updater's own decay rule runs.
    decays: object = None


@dataclasses.dataclass(frozen=True)
class Plan:
    variables: tuple  # VariablePlan for every variable, in build order
    trainable: tuple  # the non-frozen VariablePlans, in build order
    groups: tuple  # UpdateGroups partitioning `trainable`
    transform_steps: tuple  # (rule index, positions in `trainable`), in rule order
    # As `transform_steps`, for rules' update transforms and projections.
    update_steps: tuple = ()
    project_steps: tuple = ()

    def trainable_variables(self):
        return [p.variable for p in self.trainable]

    @functools.cached_property
    def calls_per_updater(self):
        """How many groups (update calls) each updater has."""
        return collections.Counter(g.updater for g in self.groups)

    def positions_of_optimizer(self, optimizer):
        """Positions in `trainable` of the variables `optimizer` updates."""
        return tuple(i for i, p in enumerate(self.trainable) if p.optimizer == optimizer)


def make_plan(rules, variables, optimizer_of_rule, strict=True, updater_of=None, decay_of=None):
    """Merges `rules` over `variables`.

    Args:
        rules: The optimizer's rules, in order.
        variables: The variables the optimizer is built on.
        optimizer_of_rule: Per rule, the index of its optimizer, or `None`
            for a rule that does not set one.
        strict: If `True`, a rule that matches no variable is an error,
            unless there are no variables at all.
        updater_of: Optional callable `(variable, optimizer) -> int`, the
            index of the optimizer holding the variable's slots (default:
            its optimizer).
        decay_of: Optional callable `(variable, updater) -> coefficient`,
            the decay the updater gives the variable (`None` for none, or
            `OWN_DECAY_RULE`). Resolving it here, once, keeps per-variable
            lookups out of the step (eager torch runs the step's Python at
            every step). Without it every group runs its updater's decay
            rule at every step.

    Returns:
        A `Plan`.
    """
    matched = [[] for _ in rules]
    plans = []
    for variable in variables:
        names, scale_rules, transform_rules = [], [], []
        update_rules, project_rules = [], []
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
            if rule.update:
                update_rules.append(index)
            if rule.project:
                project_rules.append(index)
        updater = updater_of(variable, optimizer) if updater_of else optimizer
        if weight_decay is not None:
            decay = weight_decay or None
        elif decay_of is not None:
            decay = decay_of(variable, updater)
        else:
            decay = OWN_DECAY_RULE
        plans.append(
            VariablePlan(
                variable=variable,
                rules=tuple(names),
                optimizer=optimizer,
                scale_rules=tuple(scale_rules),
                weight_decay=weight_decay,
                frozen=frozen,
                transform_rules=tuple(transform_rules),
                updater=updater,
                decay=decay,
                update_rules=tuple(update_rules),
                project_rules=tuple(project_rules),
            )
        )
    # Built on no variable (a model without trainable weights, Keras' h5
    # loader on a Functional model's own list), no rule can match: nothing
    # to check, as the plain optimizer builds too.
    if strict and variables:
        _check_every_rule_matches(rules, matched, variables)

    trainable = tuple(p for p in plans if not p.frozen)
    groups = {}
    for position, p in enumerate(trainable):
        key = (p.updater, p.scale_rules, p.weight_decay)
        groups.setdefault(key, []).append(position)
    return Plan(
        variables=tuple(plans),
        trainable=trainable,
        groups=tuple(
            UpdateGroup(
                updater=k[0], scale_rules=k[1], weight_decay=k[2], indices=tuple(v),
                decays=_decays(trainable, v),
            )
            for k, v in groups.items()
        ),
        transform_steps=_steps(trainable, "transform_rules"),
        update_steps=_steps(trainable, "update_rules"),
        project_steps=_steps(trainable, "project_rules"),
    )


def _steps(trainable, field):
    """`((rule index, positions in trainable), ...)` in rule order, for
    the rules a `VariablePlan` lists in `field`."""
    members = {}
    for position, p in enumerate(trainable):
        for index in getattr(p, field):
            members.setdefault(index, []).append(position)
    return tuple((index, tuple(members[index])) for index in sorted(members))


def _decays(trainable, positions):
    """A group's decay, split by coefficient: `((coefficient, positions),
    ...)` in order of first appearance, or `None` if its updater's own
    decay rule runs."""
    by_coefficient = {}
    for position in positions:
        decay = trainable[position].decay
        if decay == OWN_DECAY_RULE:
            return None
        if decay:
            by_coefficient.setdefault(decay, []).append(position)
    return tuple((c, tuple(members)) for c, members in by_coefficient.items())


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
    untrainable = [p for r in unmatched for p in r.selector.untrainable_paths()]
    if untrainable:
        # The likely cause, named first: Keras gives an optimizer only the
        # trainable variables.
        cause = (
            f"Variables they name are marked `trainable=False` ({untrainable[:8]}): "
            "Keras builds the optimizer on trainable variables only. To freeze "
            "them, keep them trainable and give the rule `frozen=True` (it can "
            "be unfrozen later with `optimizer.set_frozen`); to train them, set "
            "`layer.trainable = True` before compiling."
        )
    else:
        cause = (
            "A rule given a layer or variable matches that very "
            "object only: is it part of this model, and built?"
        )
    raise ValueError(
        f"Rules {[r.name for r in unmatched]} match no variable "
        f"({selectors}). Each rule must select at least one variable "
        "of the model (pass `strict=False` to allow rules that match "
        f"nothing). {cause} Variable paths: {sample}"
    )
