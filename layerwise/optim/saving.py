"""`LayerwiseOptimizer`'s saved form: its config and its state layout.

The config holds the constructor arguments (the options as `Options`
writes them) and, once training changed the optimizer (variables
unfrozen at runtime, exclusions from weight decay, the plan after
`set_frozen`), what a loaded optimizer needs to rebuild the same state
before Keras loads the values into it.

Format 3 (this engine) orders the state as `LayerwiseOptimizer.variables`
does: the rules' multipliers, each stage's state in pipeline order, then
each optimizer's variables. Files of earlier engines load into the same
state through the order they were saved in: format 2 (the engine before
the pipeline) saved the wrapper's own variables in creation order; format
1 (the single-optimizer engine, files without a `"format"` key) by
variable, without rule optimizers.
"""

import warnings

import keras

from layerwise._internals import optimizers as internals
from layerwise.optim import options as options_lib
from layerwise.optim.optimizer_config import deserialize_optimizer

FORMAT = 3


def shared_optimizer_groups(rules):
    """Indices of rules that share one optimizer instance (saved, so a
    loaded optimizer shares it too), as lists of two or more."""
    groups = {}
    for index, rule in enumerate(rules):
        if rule.optimizer is not None:
            groups.setdefault(id(rule.optimizer), []).append(index)
    return [members for members in groups.values() if len(members) > 1]


def share_optimizers(rules, groups):
    """Gives the rules of each group the first one's optimizer."""
    for members in groups:
        for index in members[1:]:
            rules[index].optimizer = rules[members[0]].optimizer


def config_of(optimizer, built_on, runtime):
    """`LayerwiseOptimizer.get_config()`: the constructor arguments, then
    what training changed.

    Args:
        optimizer: The `LayerwiseOptimizer`.
        built_on: The paths each rule-level optimizer was built on, once
            the plan changed after build, else `None`.
        runtime: What its `Updaters` saves (`Updaters.get_config`).
    """
    return {
        "name": optimizer.name,
        "optimizer": keras.saving.serialize_keras_object(optimizer.inner_optimizer),
        "rules": [keras.saving.serialize_keras_object(r) for r in optimizer.rules],
        "shared_optimizers": shared_optimizer_groups(optimizer.rules),
        **optimizer.options.get_config(),
        "format": FORMAT,
        "built_on": built_on,
        **runtime,
    }


def parse_config(config, custom_objects=None):
    """A config of any format as constructor arguments and the runtime
    part (applied when the optimizer builds).

    Returns:
        `(arguments, runtime)`: the keyword arguments of
        `LayerwiseOptimizer(...)`, and a dict with `format`, `built_on`
        (paths per rule-level optimizer, or `None`), `fresh` (`(source,
        paths)` per fresh optimizer), `ratios` and `exclusions`.
    """
    config = dict(config)
    runtime = _pop_runtime_config(config)
    optimizer = deserialize_optimizer(config.pop("optimizer"), custom_objects)
    rules = [
        keras.saving.deserialize_keras_object(r, custom_objects=custom_objects)
        for r in config.pop("rules")
    ]
    share_optimizers(rules, config.pop("shared_optimizers", []))
    count = 1 + len({id(r.optimizer) for r in rules if r.optimizer is not None})
    check_runtime_config(runtime, count)
    arguments = {
        "optimizer": optimizer,
        "rules": rules,
        **options_lib.Options.pop_config(config, custom_objects),
        **config,  # `name`, and anything unknown (refused by the constructor)
    }
    return arguments, runtime


def _pop_runtime_config(config):
    version = config.pop("format", 1)
    fresh = config.pop("unfrozen_at_runtime", [])
    if version == 1:
        built_on = config.pop("inner_built_on", None)
        return {
            "format": 1,
            "built_on": [built_on] if built_on is not None else None,
            "fresh": [(0, list(paths)) for paths in fresh],
            "ratios": None,
            "exclusions": None,
        }
    return {
        "format": version,
        "built_on": config.pop("built_on", None),
        "fresh": [(entry["source"], list(entry["paths"])) for entry in fresh],
        "ratios": config.pop("learning_rate_ratios", None),
        "exclusions": config.pop("weight_decay_exclusions", None),
    }


def check_runtime_config(runtime, count):
    """Refuses a runtime part that does not fit the `count` rule-level
    optimizers of the config (an edited or foreign file), before anything
    is built from it."""
    fix = (
        "The file was edited or written by another program: save the model "
        "again from training, or load it with `compile=False` and compile a "
        "new optimizer."
    )
    if runtime["format"] not in (1, 2, FORMAT):
        raise ValueError(
            "`format` in the saved optimizer config must be one this version "
            "of layerwise reads (1, 2 or 3). A file written by a newer "
            f"layerwise needs that version. Received: format={runtime['format']!r}"
        )
    for index, (source, paths) in enumerate(runtime["fresh"]):
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < count:
            raise ValueError(
                f"`unfrozen_at_runtime[{index}]['source']` in the saved "
                "optimizer config must be the index of one of its "
                f"{count} optimizer(s) (0 to {count - 1}). {fix} Received: "
                f"source={source!r}"
            )
        if not all(isinstance(p, str) for p in paths):
            raise ValueError(
                f"`unfrozen_at_runtime[{index}]['paths']` in the saved "
                f"optimizer config must be variable paths (strings). {fix} "
                f"Received: paths={paths!r}"
            )
    built_on = runtime["built_on"]
    if built_on is not None and len(built_on) != count:
        raise ValueError(
            "`built_on` in the saved optimizer config must list the paths "
            f"of each of its {count} optimizer(s). {fix} Received: "
            f"{len(built_on)} entries"
        )


def load_variables(optimizer, store, version):
    """Loads a state store of `version` into `optimizer` (built from the
    same config), warning and skipping as Keras does when the counts
    differ."""
    if version == 1:
        variables = _per_rule_multipliers(optimizer, format_1_order(optimizer))
    elif version == 2:
        variables = _per_rule_multipliers(optimizer, format_2_order(optimizer))
    else:
        variables = optimizer.variables
    if len(store.keys()) != len(variables):
        warnings.warn(
            f"Skipping variable loading for optimizer '{optimizer.name}', "
            f"because it has {len(variables)} variables whereas the saved "
            f"optimizer has {len(store.keys())} variables.",
            stacklevel=3,
        )
        return
    for index, variable in enumerate(variables):
        variable.assign(store[str(index)])


def _per_rule_multipliers(optimizer, ordered):
    """`ordered` with the multiplier vector replaced by its entries: formats
    1 and 2 saved one scalar variable per rule with a constant
    `lr_scale`, in rule order, where format 3 saves the vector."""
    multipliers = [r.multiplier for r in optimizer.rules if r.multiplier is not None]
    if not multipliers:
        return ordered
    vector = multipliers[0].variable
    expanded = []
    for variable in ordered:
        expanded += multipliers if variable is vector else [variable]
    return expanded


def _own_state_in_creation_order(optimizer):
    """The variables the wrapper created itself, in creation order, without
    the base class's step counter and learning rate (the inner optimizer
    owns those)."""
    unused = internals.base_counter_and_rate(optimizer)
    return [
        v for v in internals.own_variables(optimizer) if not any(v is u for u in unused)
    ]


def format_2_order(optimizer):
    """This engine's variables in the order format 2 saved them: the
    wrapper's own in creation order (multipliers, skip counter, log
    variables, then accumulators and averages as build and each unfreeze
    created them), then each optimizer's."""
    ordered = _own_state_in_creation_order(optimizer) + optimizer.updaters.variables
    _check_same_variables(optimizer, ordered, 2)
    return ordered


def format_1_order(optimizer):
    """This engine's variables in the order format 1 saved them.

    Format 1: the wrapper's scalars (multipliers, skip counter, logs), the
    micro-step counter, then per optimizer holding slots (the inner one,
    then each fresh one) and per variable it was built on: accumulator,
    average; then the inner optimizer's variables and each fresh one's.
    """
    own = _own_state_in_creation_order(optimizer)
    accumulation = optimizer.pipeline["accumulation"]
    ema = optimizer.pipeline["moving_average"]
    updaters = optimizer.updaters.updaters
    slots = []
    for updater in updaters:
        for variable in internals.built_variables(updater):
            if accumulation.accumulating:
                slots.append(accumulation.accumulator(variable))
            if ema.enabled:
                slots.append(ema.average(variable))
    slot_ids = {id(v) for v in slots}
    counter = [accumulation.micro_step] if accumulation.accumulating else []
    counter_ids = {id(v) for v in counter}
    ordered = [v for v in own if id(v) not in slot_ids and id(v) not in counter_ids]
    ordered += counter + slots
    for updater in updaters:
        ordered += updater.variables
    _check_same_variables(optimizer, ordered, 1)
    return ordered


def _check_same_variables(optimizer, ordered, version):
    if len(ordered) != len(optimizer.variables):
        raise ValueError(
            f"This format-{version} file does not match the optimizer built from "
            f"its config: {len(ordered)} variables in the old order, "
            f"{len(optimizer.variables)} built."
        )
