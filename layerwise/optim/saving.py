"""`LayerwiseOptimizer`'s saved form: its config and its state layout.

The config holds the constructor arguments and, once training changed the
optimizer (variables unfrozen at runtime, exclusions from weight decay),
what a loaded optimizer needs to rebuild the same state before Keras loads
the values into it.

Format 2 (this engine) orders the state as `LayerwiseOptimizer.variables`
does: the wrapper's own variables in creation order, then each optimizer's.
Format 1 (the single-optimizer engine before it, files without a
`"format"` key) ordered the wrapper's per-variable state by variable and
had no rule optimizers; `format_1_order` lists this engine's variables in
that order, so old files load into the same state.
"""

import keras

from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib
from layerwise.optim.optimizer_config import deserialize_optimizer

FORMAT = 2


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


def decay_exclusions(optimizers, variables):
    """What `exclude_from_weight_decay` set on each optimizer: the paths of
    excluded variables among `variables` and the name pattern, or `None`
    where nothing is excluded (Keras' own config forgets these)."""
    saved = []
    for optimizer in optimizers:
        keys, pattern = internals.decay_exclusion(optimizer)
        paths = [plan_lib.path_of(v) for v in variables if internals.variable_key(optimizer, v) in keys]
        pattern = pattern.pattern if pattern is not None else None
        saved.append({"var_paths": paths, "pattern": pattern} if paths or pattern else None)
    return saved


def restore_decay_exclusions(optimizers, saved, variables):
    """Re-applies saved exclusions once the variables exist (at build)."""
    for optimizer, exclusion in zip(optimizers, saved or ()):
        if exclusion is None:
            continue
        paths = set(exclusion["var_paths"])
        pattern = exclusion["pattern"]
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in variables if plan_lib.path_of(v) in paths] or None,
            var_names=[pattern] if pattern else None,
        )


def config_of(optimizer):
    """`LayerwiseOptimizer.get_config()`: the constructor arguments, then
    what training changed."""
    return {
        "name": optimizer.name,
        "optimizer": keras.saving.serialize_keras_object(optimizer.inner_optimizer),
        "rules": [keras.saving.serialize_keras_object(r) for r in optimizer.rules],
        "shared_optimizers": shared_optimizer_groups(optimizer.rules),
        "gradient_hook": keras.saving.serialize_keras_object(optimizer.gradient_hook),
        "strict": optimizer.strict,
        "accumulate_steps": optimizer.accumulate_steps,
        "ema": optimizer.ema,
        "ema_bias_correction": optimizer.ema_bias_correction,
        "ema_overwrite_at_end": optimizer.ema_overwrite_at_end,
        "ema_overwrite_frequency": optimizer.ema_overwrite_frequency,
        "skip_nonfinite": optimizer.skip_nonfinite,
        "skip_frozen_gradients": optimizer.skip_frozen_gradients,
        "log": list(optimizer.log),
        **runtime_config(optimizer),
    }


def from_config(cls, config, custom_objects=None):
    """`LayerwiseOptimizer.from_config()`, for either format: the
    constructor, then the runtime part, applied when the optimizer builds
    (before Keras loads the saved values into it)."""
    config = dict(config)
    runtime = parse_runtime_config(config)
    optimizer = deserialize_optimizer(config.pop("optimizer"), custom_objects)
    rules = [
        keras.saving.deserialize_keras_object(r, custom_objects=custom_objects)
        for r in config.pop("rules")
    ]
    share_optimizers(rules, config.pop("shared_optimizers", []))
    count = 1 + len({id(r.optimizer) for r in rules if r.optimizer is not None})
    check_runtime_config(runtime, count)
    hook = config.pop("gradient_hook", None)
    if hook is not None:
        hook = keras.saving.deserialize_keras_object(hook, custom_objects=custom_objects)
    instance = cls(optimizer, rules, gradient_hook=hook, **config)
    instance._format = runtime["format"]
    instance._planning.built_on = runtime["built_on"]
    instance._planning.saved_fresh = runtime["fresh"]
    instance._pending_exclusions = runtime["exclusions"]
    instance._updates.restore_ratios(runtime["ratios"])
    return instance


def runtime_config(optimizer):
    """The part of the config that training changed."""
    updates = optimizer._updates
    exclusions = optimizer._pending_exclusions
    if optimizer.built:
        exclusions = decay_exclusions(updates.optimizers, internals.built_variables(optimizer))
    return {
        "format": FORMAT,
        "weight_decay_exclusions": exclusions,
        "built_on": optimizer._planning.built_on,
        "unfrozen_at_runtime": [
            {"source": source, "paths": list(paths)} for source, paths in updates.fresh
        ],
        "learning_rate_ratios": updates.learning_rate_ratios() if len(updates.optimizers) > 1 else None,
    }


def parse_runtime_config(config):
    """Pops the runtime part of a config (either format).

    Returns:
        A dict with `format`, `built_on` (paths per rule-level optimizer, or
        `None`), `fresh` (`(source, paths)` per fresh optimizer), `ratios`
        and `exclusions`.
    """
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


def format_1_order(optimizer):
    """This engine's variables in the order format 1 saved them.

    Format 1: the wrapper's scalars (multipliers, skip counter, logs), the
    micro-step counter, then per optimizer holding slots (the inner one,
    then each fresh one) and per variable it was built on: accumulator,
    average; then the inner optimizer's variables and each fresh one's.
    """
    own = optimizer._own_state()
    accumulation = optimizer._accumulation
    ema = optimizer._ema
    updaters = optimizer._updates.updaters
    slots = []
    for updater in updaters:
        for variable in internals.built_variables(updater):
            if accumulation.enabled:
                slots.append(accumulation.accumulator(variable))
            if ema.enabled:
                slots.append(ema.average(variable))
    slot_ids = {id(v) for v in slots}
    counter = [accumulation.micro_step] if accumulation.enabled else []
    counter_ids = {id(v) for v in counter}
    ordered = [v for v in own if id(v) not in slot_ids and id(v) not in counter_ids]
    ordered += counter + slots
    for updater in updaters:
        ordered += updater.variables
    if len(ordered) != len(optimizer.variables):
        raise ValueError(
            "This format-1 file does not match the optimizer built from its "
            f"config: {len(ordered)} variables in the old order, "
            f"{len(optimizer.variables)} built."
        )
    return ordered


def load_format_1(optimizer, store):
    """Loads a format-1 state store into `optimizer` (built from the same
    config), warning and skipping as Keras does when the counts differ."""
    variables = format_1_order(optimizer)
    if len(store.keys()) != len(variables):
        import warnings

        warnings.warn(
            f"Skipping variable loading for optimizer '{optimizer.name}', "
            f"because it has {len(variables)} variables whereas the saved "
            f"(format 1) optimizer has {len(store.keys())} variables.",
            stacklevel=3,
        )
        return
    for index, variable in enumerate(variables):
        variable.assign(store[str(index)])
