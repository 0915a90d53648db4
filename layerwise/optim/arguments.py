"""What `LayerwiseOptimizer` is given: its rules, the variables and
gradients of `apply`, the values of `set_weights`; checked before any
state changes.

The constructor's options are checked in `options.py`; the rules and
their optimizers here, before the constructor changes anything (the inner
optimizer included), so a bad argument leaves nothing half-built. Messages
follow Keras' form: "`arg` must be X. Received: arg=value".
"""

import collections

from layerwise._internals import optimizers as internals
from layerwise._internals import trainers as trainer_internals
from layerwise.optim import checks
from layerwise.optim import multipliers as multipliers_lib
from layerwise.optim import plan as plan_lib
from layerwise.optim import rules as rules_lib

def check_rule_optimizers(optimizer, rules):
    """Checks `rules` and the optimizers they give, against the inner
    `optimizer`."""
    rules, names = check_rules(rules)
    for index, (name, rule) in enumerate(zip(names, rules)):
        if rule.optimizer is None:
            continue
        if rule.optimizer is optimizer:
            raise ValueError(
                f"Rule {name!r} must not be given the inner optimizer as "
                "its `optimizer`: variables no rule gives an optimizer already "
                "follow it. Drop `optimizer=` from the rule, or pass a separate "
                "instance."
            )
        # Again here: the rule may have been created before its optimizer
        # was built or taken by another LayerwiseOptimizer.
        checks.check_unowned_optimizer(rule.optimizer, f"rules[{index}].optimizer")


def bind_rules(rules, state):
    """Checks `rules` and returns the optimizer's named copies, with the
    vector holding their constant multipliers.

    Args:
        rules: A `Rule` or a list of them.
        state: The optimizer's `StateMaker`.

    Returns:
        `(bound rules, Multipliers)`.
    """
    rules, names = check_rules(rules)
    constant = [rule.has_constant_scale for rule in rules]
    multipliers = multipliers_lib.Multipliers(
        state, [rule.lr_scale for rule, c in zip(rules, constant) if c]
    )
    bound = []
    index = 0
    for name, rule, is_constant in zip(names, rules, constant):
        multiplier = None
        if is_constant:
            multiplier = multipliers[index]
            index += 1
        bound.append(rule.bind(name, multiplier))
    return tuple(bound), multipliers


def check_rules(rules):
    """Checks `rules` (a `Rule` or a list of them); returns them as a list,
    and the name each gets in the optimizer."""
    if isinstance(rules, rules_lib.Rule):
        rules = [rules]
    if not isinstance(rules, (list, tuple)):
        raise TypeError(f"`rules` must be a list of `Rule`s. Received: rules={rules!r}")
    for rule in rules:
        if not isinstance(rule, rules_lib.Rule):
            raise TypeError(
                "`rules` must be a list of `layerwise.Rule` objects. "
                f"Received an element: {rule!r}"
            )
    names = [rule.name or f"rule_{i}" for i, rule in enumerate(rules)]
    duplicates = sorted(n for n, k in collections.Counter(names).items() if k > 1)
    if duplicates:
        raise ValueError(f"Rule names must be unique. Received duplicate names: {duplicates}")
    return list(rules), names


def distinct_optimizers(wrapped, rules):
    """The inner optimizer and each distinct rule optimizer (by identity,
    in rule order), and per rule the index of its optimizer or `None`."""
    optimizers = [wrapped]
    index_of = {}
    optimizer_of_rule = []
    for rule in rules:
        if rule.optimizer is None:
            optimizer_of_rule.append(None)
            continue
        key = id(rule.optimizer)
        if key not in index_of:
            index_of[key] = len(optimizers)
            optimizers.append(rule.optimizer)
        optimizer_of_rule.append(index_of[key])
    return optimizers, optimizer_of_rule


def variables_for(optimizer, grads):
    """The variables `grads` belong to when the caller does not say: all
    the built variables, or, once frozen ones are marked untrainable, the
    ones still trainable (the trainer's order)."""
    built = internals.built_variables(optimizer)
    if len(grads) == len(built):
        return built
    _check_built_on_some_variable(optimizer, len(grads))
    trainable = [v for v in built if v.trainable]
    if len(grads) == len(trainable):
        return trainable
    raise ValueError(
        "`grads` must have one entry per variable the optimizer was "
        f"built with ({len(built)}), or per one still trainable "
        f"({len(trainable)}). Received {len(grads)} gradients."
    )


def _check_built_on_some_variable(optimizer, received):
    # Building on no variable is allowed (Keras does, for a model without
    # trainable weights); updating some afterwards is the usual slip of
    # `build(model.trainable_variables)` before the model was built.
    if internals.built_variables(optimizer):
        return
    raise ValueError(
        "The optimizer was built on no variable, so it cannot update the "
        f"{received} it received. `optimizer.build(model.trainable_variables)` "
        "before the model is built passes an empty list (as does Keras' "
        "legacy `.h5` loader for a Functional model): build the optimizer "
        "after the model, or use a new optimizer."
    )


def resolve_variables(optimizer, grads, trainable_variables):
    """The variables `apply(grads, trainable_variables)` updates, checked;
    builds `optimizer` on them if it is not built yet."""
    if trainable_variables is None:
        if not optimizer.built:
            raise ValueError(
                "When passing `grads` without `trainable_variables`, the "
                "optimizer must already be built: call "
                "`optimizer.build(trainable_variables)` first."
            )
        return variables_for(optimizer, grads)
    variables = list(trainable_variables)
    if not optimizer.built:
        optimizer.build(variables)
    if variables:
        _check_built_on_some_variable(optimizer, len(variables))
    try:
        internals.check_variables_are_known(optimizer, variables)
    except ValueError:
        # Keras' message prints the whole variable; name the likely cause.
        raise ValueError(_unknown_variables_message(optimizer, variables)) from None
    if len(grads) != len(variables):
        raise ValueError(
            "`grads` must have one entry per variable. Received "
            f"{len(grads)} gradients for {len(variables)} variables."
        )
    return variables


# The cause and the fix, shared by the messages for another model's
# variables (`apply`) and another model's step (`stateless_apply`).
_ONE_OPTIMIZER_PER_MODEL = (
    "A `LayerwiseOptimizer`, like any Keras optimizer, belongs to the model "
    "it was built for (its plan and slots are that model's variables): "
    "was it compiled into a second model, or were variables created "
    "after it was built? Create a new optimizer for the new variables, "
    "e.g. `LayerwiseOptimizer.from_config(optimizer.get_config())` for "
    "the same settings with fresh state."
)


def _unknown_variables_message(optimizer, variables):
    known = {internals.variable_key(optimizer, v) for v in internals.built_variables(optimizer)}
    unknown = [
        plan_lib.path_of(v) for v in variables
        if internals.variable_key(optimizer, v) not in known
    ]
    return (
        "`trainable_variables` must be variables this optimizer was built "
        f"with. Received {len(unknown)} other(s): {unknown[:8]}. "
        + _ONE_OPTIMIZER_PER_MODEL
    )


def stateless_targets(optimizer, values):
    """The variables `stateless_apply` receives the `values` of, checked
    against the step Keras' JAX trainer is running.

    That trainer passes values only, never the model's variables, so the
    check `apply` makes (`resolve_variables`) cannot see another model's
    variables. What it can see: `fit` takes the values of the model's and
    of the optimizer's variables into the step's state. If it took the
    optimizer's step counter but left a variable the optimizer was built
    with, the step is another model's. Python only, as the rest of
    `stateless_apply`: once per trace under `jit_compile`.

    Args:
        optimizer: A built `LayerwiseOptimizer`.
        values: `stateless_apply`'s `trainable_variables`: one value per
            variable it was built with, or per one still trainable.

    Returns:
        The variables, in the order of `values`.

    Raises:
        ValueError: Naming the variables the step left and the fix.
    """
    targets = variables_for(optimizer, values)
    step = internals.iterations_variable(optimizer.inner_optimizer)
    if not trainer_internals.taken_into_step_state(step):
        return targets  # A custom loop, `train_on_batch` or another backend.
    left = [plan_lib.path_of(v) for v in targets if not trainer_internals.taken_into_step_state(v)]
    if left:
        raise ValueError(_other_models_step_message(len(targets), left))
    return targets


def _other_models_step_message(count, left):
    return (
        "`trainable_variables` must be the values of variables this optimizer "
        "was built with, but Keras' JAX trainer is training another model: "
        f"{len(left)} of the {count} variables it was built with are not in "
        f"the step: {left[:8]}. " + _ONE_OPTIMIZER_PER_MODEL
    )


def check_weights(optimizer, weights):
    """`set_weights`' argument: one array per variable, shapes matching."""
    if not optimizer.built:
        raise ValueError(
            "You are calling `set_weights()` on an optimizer that has not yet "
            "been built. Call `optimizer.build(trainable_variables)` to create "
            "the optimizer weights before calling `set_weights()`."
        )
    variables = optimizer.variables
    if len(weights) != len(variables):
        raise ValueError(
            f"`weights` must have {len(variables)} entries, one per "
            f"optimizer variable. Received: {len(weights)} entries."
        )
    for variable, weight in zip(variables, weights):
        if tuple(variable.shape) != tuple(weight.shape):
            raise ValueError(
                f"Optimizer variable {variable.path} has shape "
                f"{variable.shape}, incompatible with {weight.shape}."
            )


class InnerArgument:
    """An argument of the inner optimizer, read and written through the
    wrapper: Keras' `LossScaleOptimizer` and `MultiOptimizer` set
    `loss_scale_factor` on the optimizer they wrap, users read `clipnorm`.
    (The base class assigns these before the inner optimizer exists.)"""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        inner = vars(instance).get("inner_optimizer")
        return None if inner is None else getattr(inner, self.name)

    def __set__(self, instance, value):
        inner = vars(instance).get("inner_optimizer")
        if inner is not None:
            setattr(inner, self.name, value)
