"""`Rule`: how a selection of variables learns.

A rule pairs a selector (which variables) with settings (how they learn):
an optimizer of their own, a learning-rate multiplier, a weight-decay
coefficient, freezing, and gradient transforms. Rules are plain,
inspectable objects; the `LayerwiseOptimizer` merges them into a
per-variable plan once, at build.
"""

import copy

import keras
import numpy as np

from layerwise import _validation
from layerwise.optim import checks
from layerwise.optim import projections as projections_lib
from layerwise.optim import optimizer_config
from layerwise.optim import selectors as selectors_lib
from layerwise.optim import transforms as transforms_lib
from layerwise.optim import update_transforms as update_lib

_PACKAGE = "layerwise"


def check_lr_scale(value, arg_name="lr_scale"):
    """Validates a learning-rate multiplier; returns it (floats as float)."""
    if value is None or isinstance(
        value, keras.optimizers.schedules.LearningRateSchedule
    ):
        return value
    if _validation.is_real_number(value):
        return _validation.check_nonnegative_finite(value, arg_name)
    if callable(value):
        _validation.check_arity(value, 1, arg_name)
        return value
    raise TypeError(
        f"`{arg_name}` must be a finite number >= 0, a "
        "`keras.optimizers.schedules.LearningRateSchedule` or a callable of "
        f"the step. Received: {arg_name}={value!r}"
    )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Rule:
    """Selects variables and sets how they learn.

    Several rules may match one variable. They merge attribute by attribute
    in rule order: `lr_scale`s multiply, `gradient` and `update` transforms
    and `project`ions chain in rule order, and `optimizer`, `weight_decay` and `frozen` take the value of
    the last matching rule that sets them. A variable no rule matches
    learns exactly as under the inner optimizer.

    Args:
        match: Which variables: a `keras.layers.Layer` (all its variables,
            nested layers included), a `keras.Variable`, a regular
            expression matched with `re.fullmatch` against `variable.path`
            (e.g. `"encoder/.*"`), a callable `variable -> bool`, or a list or
            tuple of these (any of them).
        optimizer: Optional unbuilt `keras.optimizers.Optimizer` that
            updates these variables instead of the inner one: its own
            update rule, hyperparameters, learning rate (or schedule, at its
            own step count), slots, weight decay and clipping (over its own
            variables, as in Keras' `MultiOptimizer`). `lr_scale`s multiply
            its learning rate. Rules given the same instance share it (one
            set of slots and one step count). It must not set
            `gradient_accumulation_steps`, `use_ema` or
            `loss_scale_factor`, which act on the whole step: set them on
            `LayerwiseOptimizer`.
        lr_scale: Learning-rate multiplier: a number >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            of the optimizer step returning the multiplier. A number can be
            changed during training (`optimizer.set_lr_scale(name, value)`
            or `rule.lr_scale = value`) without retracing.
        weight_decay: Decoupled weight-decay coefficient for these
            variables, replacing whatever coefficient their optimizer would
            use for them (for Muon, `weight_decay` on the variables it
            orthogonalizes and `adam_weight_decay` on those its AdamW path
            updates) and its `exclude_from_weight_decay`; `0.0` turns decay
            off. Applied as Keras does, `v -= v * weight_decay * lr` with the
            variable's learning rate.
        frozen: If `True`, the variables are not updated and get no
            optimizer slots. `False` un-freezes what an earlier rule froze.
        gradient: A transform or list of transforms (see
            `layerwise.optim.transforms`) or callables
            `(gradient, variable) -> gradient`, applied in order to the
            gradients of the selected variables before the update.
        name: Name used by `summary()`, `set_lr_scale()` and in saved
            files. Defaults to `"rule_<index>"` inside an optimizer.
        update: An update transform or list of them (see
            `layerwise.optim.update_transforms`: `lw.trust_ratio()`,
            `lw.cautious()`, ...) or callables `(update, gradient, weights)
            -> update`, applied in order to the change the variables'
            optimizer computed, before it lands (the decoupled weight decay
            lands as usual, outside them).
        project: A projection or list of them (`lw.max_norm(...)`,
            `lw.unit_norm(...)`, any `keras.constraints.Constraint` or
            callable `weights -> weights`), applied in order to the weights
            after the update and after Keras' `variable.constraint`.

    Example:

    >>> import layerwise as lw
    >>> rule = lw.Rule("encoder/.*", lr_scale=0.5,
    ...                gradient=[lw.clip_by_norm(1.0)], name="encoder")
    >>> rule.lr_scale
    0.5
    """

    def __init__(
        self,
        match,
        *args,
        optimizer=None,
        lr_scale=None,
        weight_decay=None,
        frozen=None,
        gradient=(),
        name=None,
        update=(),
        project=(),
        **kwargs,
    ):
        # `*args` and `**kwargs` only catch misuse, with a hint at the
        # argument meant (Python's own message names neither).
        _check_misplaced(args, kwargs)
        self.selector = selectors_lib.as_selector(match)
        if optimizer is not None:
            checks.check_group_optimizer(optimizer)
        self.optimizer = optimizer
        self._lr_scale = check_lr_scale(lr_scale)
        if weight_decay is not None:
            weight_decay = _validation.check_nonnegative_finite(
                weight_decay, "weight_decay"
            )
        self.weight_decay = weight_decay
        if frozen is not None and not isinstance(frozen, bool):
            raise TypeError(
                f"`frozen` must be True, False or None. Received: frozen={frozen!r}"
            )
        self.frozen = frozen
        if not isinstance(gradient, (list, tuple)):
            gradient = [gradient]
        self.gradient = tuple(transforms_lib.as_transform(t) for t in gradient)
        if not isinstance(update, (list, tuple)):
            update = [update]
        self.update = tuple(update_lib.as_update_transform(t) for t in update)
        if not isinstance(project, (list, tuple)):
            project = [project]
        self.project = tuple(projections_lib.as_projection(p) for p in project)
        if frozen and (self.update or self.project):
            raise ValueError(
                "A frozen rule gets no update, so its `update` transforms and "
                "`project`ions would never run: give them to a rule that does "
                f"not freeze. Received: frozen=True, update={list(self.update)!r}, "
                f"project={[projections_lib.describe(p) for p in self.project]}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(
                f"`name` must be a non-empty string. Received: name={name!r}"
            )
        self.name = name
        self._multiplier = None

    @property
    def lr_scale(self):
        """The multiplier: its current value once bound to an optimizer."""
        if self._multiplier is not None:
            # The shortest decimal that round-trips the float32 value, so a
            # scale set to 0.2 reads back as 0.2.
            value = self._multiplier.read()
            return float(np.format_float_positional(value, unique=True, trim="0"))
        return self._lr_scale

    @lr_scale.setter
    def lr_scale(self, value):
        value = check_lr_scale(value)
        if self._multiplier is None:
            self._lr_scale = value
            return
        if not _validation.is_real_number(value):
            raise TypeError(
                f"Rule {self.name!r} belongs to an optimizer: its `lr_scale` "
                "can only be changed to a number at runtime. Received: "
                f"lr_scale={value!r}"
            )
        self._multiplier.assign(value)
        self._lr_scale = value

    @property
    def multiplier(self):
        """Where a constant multiplier lives once the rule is bound to an
        optimizer (an entry of its `lr_scales` variable), else `None`."""
        return self._multiplier

    @property
    def sets_lr_scale(self):
        """Whether this rule sets a multiplier (a number or a schedule)."""
        return self._lr_scale is not None

    @property
    def has_constant_scale(self):
        return _validation.is_real_number(self._lr_scale)

    def matches(self, variable):
        return self.selector.matches(variable)

    def scale_value(self, step):
        """The multiplier at `step`, as a tensor (used in the train step)."""
        if self._multiplier is not None:
            return self._multiplier.tensor()
        if isinstance(self._lr_scale, keras.optimizers.schedules.LearningRateSchedule):
            return self._lr_scale(step)
        if callable(self._lr_scale):
            return self._lr_scale(step)
        return self._lr_scale

    def bind(self, name, multiplier):
        """Returns a copy of this rule owned by an optimizer, its constant
        multiplier (if any) held by `multiplier` (a `Multiplier`)."""
        rule = copy.copy(self)
        rule.name = name
        rule._multiplier = multiplier
        return rule

    def describe_scale(self):
        """The multiplier for people: a number to 6 significant digits, or
        the schedule's own repr (a function by its name)."""
        if self._lr_scale is None:
            return None
        if self.has_constant_scale:
            return _number(self.lr_scale)
        if isinstance(self._lr_scale, keras.optimizers.schedules.LearningRateSchedule):
            return _Literal(repr(self._lr_scale))
        return _Literal(getattr(self._lr_scale, "__name__", type(self._lr_scale).__name__))

    def get_config(self):
        lr_scale = self.lr_scale
        if lr_scale is not None and not _validation.is_real_number(lr_scale):
            lr_scale = keras.saving.serialize_keras_object(lr_scale)
        optimizer = None
        if self.optimizer is not None:
            optimizer = keras.saving.serialize_keras_object(self.optimizer)
        return {
            "match": selectors_lib.serialize_selector(self.selector),
            "optimizer": optimizer,
            "lr_scale": lr_scale,
            "weight_decay": self.weight_decay,
            "frozen": self.frozen,
            "gradient": [
                keras.saving.serialize_keras_object(t) for t in self.gradient
            ],
            "name": self.name,
            "update": [keras.saving.serialize_keras_object(t) for t in self.update],
            "project": [keras.saving.serialize_keras_object(p) for p in self.project],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        match = selectors_lib.deserialize_selector(config.pop("match"))
        lr_scale = config.pop("lr_scale")
        if isinstance(lr_scale, dict):
            lr_scale = keras.saving.deserialize_keras_object(lr_scale)
        gradient = [
            keras.saving.deserialize_keras_object(t)
            for t in config.pop("gradient")
        ]
        # Files saved before update transforms and projections have neither.
        update = [keras.saving.deserialize_keras_object(t) for t in config.pop("update", [])]
        project = [keras.saving.deserialize_keras_object(p) for p in config.pop("project", [])]
        optimizer = config.pop("optimizer", None)
        if optimizer is not None:
            optimizer = optimizer_config.deserialize_optimizer(optimizer)
        return cls(
            match, optimizer=optimizer, lr_scale=lr_scale, gradient=gradient,
            update=update, project=project, **config,
        )

    def __repr__(self):
        parts = [self.selector.describe()]
        if self.optimizer is not None:
            parts.append(f"optimizer={_Literal(describe_optimizer(self.optimizer))!r}")
        for key in ("lr_scale", "weight_decay", "frozen"):
            value = self.describe_scale() if key == "lr_scale" else getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value!r}")
        if self.gradient:
            parts.append(f"gradient={list(self.gradient)!r}")
        if self.update:
            parts.append(f"update={list(self.update)!r}")
        if self.project:
            described = ", ".join(projections_lib.describe(p) for p in self.project)
            parts.append(f"project=[{described}]")
        if self.name:
            parts.append(f"name={self.name!r}")
        return "Rule(" + ", ".join(parts) + ")"


_SETTINGS = ("optimizer", "lr_scale", "weight_decay", "frozen", "gradient", "update", "project", "name")


def _check_misplaced(args, kwargs):
    """Positional settings and unknown keywords, with the fix."""
    if args:
        if isinstance(args[0], keras.optimizers.Optimizer):
            hint = f"optimizer={args[0]!r}"
        elif isinstance(args[0], bool):
            hint = f"frozen={args[0]!r}"
        elif _validation.is_real_number(args[0]) or callable(args[0]):
            hint = f"lr_scale={args[0]!r}"
        else:
            hint = "lr_scale=..."
        raise TypeError(
            "`Rule` takes one positional argument, `match`; its settings "
            f"are keyword arguments ({', '.join(_SETTINGS)}). Write e.g. "
            f"`Rule(match, {hint})`. Received: {len(args)} more positional "
            f"argument(s): {', '.join(repr(a) for a in args)}"
        )
    if "learning_rate" in kwargs:
        raise TypeError(
            "`Rule` does not take `learning_rate`: a rule multiplies its "
            "variables' learning rate with `lr_scale=` (relative to the "
            "optimizer's, so schedules and `ReduceLROnPlateau` still apply), "
            "or gives them an optimizer of their own with its own rate "
            "(`optimizer=keras.optimizers.Adam(learning_rate)`). Received: "
            f"learning_rate={kwargs['learning_rate']!r}"
        )
    if kwargs:
        raise TypeError(
            f"`Rule` takes the keyword arguments {', '.join(_SETTINGS)}. "
            f"Received unknown argument(s): {kwargs!r}"
        )


class _Literal(str):
    """Text shown as is inside a repr (no quotes)."""

    def __repr__(self):
        return str(self)


def _number(value):
    """`value` to 6 significant digits: `0.7 ** 3` shows as 0.343."""
    return float(f"{value:.6g}")


def describe_optimizer(optimizer):
    """`ClassName(learning_rate=...)` for reprs and tables."""
    try:
        rate = optimizer.get_config()["learning_rate"]
    except Exception:  # A custom optimizer with an unusual config.
        return type(optimizer).__name__
    if _validation.is_real_number(rate):
        rate = _number(rate)
    elif isinstance(rate, dict):
        rate = rate.get("class_name", "schedule")
    return f"{type(optimizer).__name__}(learning_rate={rate})"
