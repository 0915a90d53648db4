"""`LayerwiseOptimizer`'s options: one validated object.

The constructor's keyword options (everything but the inner optimizer,
the rules and the name) are checked, normalized, serialized and read back
here and nowhere else. Checking happens before the constructor changes
anything, the inner optimizer included, so a bad option leaves nothing
half-built; messages follow Keras' form ("`arg` must be X. Received:
arg=value").

An option a stage needs reaches it as a constructor argument of that
stage (`layerwise/optim/stages/`); the optimizer exposes every option
read-only under its own name (`optimizer.skip_nonfinite`).
"""

import dataclasses

import keras

from layerwise import _validation

# Keras optimizer keyword arguments that belong on the inner optimizer:
# accepting them here would create a second, conflicting copy.
_WRAPPED_ONLY_ARGS = (
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)

# The per-step statistics `log=` may ask for (see the diagnostics stage).
STATS = ("lr", "grad_norm", "update_ratio", "update_norm")


@dataclasses.dataclass
class Options:
    """The options of a `LayerwiseOptimizer`, checked and normalized.

    Attributes are the constructor's keyword arguments (see
    `LayerwiseOptimizer`), normalized: `accumulate_steps` is an int (1
    when off), `log` a tuple. Build one with `Options.checked`, which also
    takes over the inner optimizer's `gradient_accumulation_steps` and
    `use_ema` once the optimizer's other checks passed; the plain
    constructor does not check.
    """

    gradient_hook: object = None
    strict: bool = True
    accumulate_steps: int = 1
    ema: object = None
    ema_bias_correction: bool = False
    ema_overwrite_at_end: bool = False
    ema_overwrite_frequency: object = None
    skip_nonfinite: bool = False
    skip_frozen_gradients: bool = True
    log: tuple = ()

    @classmethod
    def checked(cls, optimizer, **options):
        """Checks the options of a wrapper of `optimizer` against it;
        changes nothing (see `take_over`).

        Args:
            optimizer: The inner optimizer (already checked).
            **options: The options, by name.

        Returns:
            An `Options`.
        """
        values = cls(**options)
        values._check(optimizer)
        return values

    def _check(self, optimizer):
        if self.gradient_hook is not None:
            if not callable(self.gradient_hook):
                raise TypeError(
                    "`gradient_hook` must be a callable `(grads, variables) "
                    f"-> grads`. Received: gradient_hook={self.gradient_hook!r}"
                )
            _validation.check_arity(self.gradient_hook, 2, "gradient_hook")
        for name in ("strict", "ema_bias_correction", "ema_overwrite_at_end",
                     "skip_nonfinite", "skip_frozen_gradients"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
        self.accumulate_steps = check_steps(self.accumulate_steps)
        if optimizer.gradient_accumulation_steps:
            check_steps(optimizer.gradient_accumulation_steps)
        self.ema = check_momentum(self.ema)
        self.ema_overwrite_frequency = check_overwrite_frequency(
            self.ema_overwrite_frequency, self.ema is not None or optimizer.use_ema
        )
        self.log = check_stats(self.log)
        self._check_inner_agrees(optimizer)

    def _check_inner_agrees(self, optimizer):
        inner_steps = optimizer.gradient_accumulation_steps
        if inner_steps and self.accumulate_steps not in (1, inner_steps):
            raise ValueError(
                "`accumulate_steps` and the inner optimizer's "
                "`gradient_accumulation_steps` disagree. Received: "
                f"accumulate_steps={self.accumulate_steps}, "
                f"gradient_accumulation_steps={inner_steps}"
            )
        if optimizer.use_ema and self.ema not in (None, optimizer.ema_momentum):
            raise ValueError(
                "`ema` and the inner optimizer's `ema_momentum` disagree. "
                f"Received: ema={self.ema}, ema_momentum={optimizer.ema_momentum}"
            )
        frequency = optimizer.ema_overwrite_frequency if optimizer.use_ema else None
        if frequency and self.ema_overwrite_frequency not in (None, frequency):
            raise ValueError(
                "`ema_overwrite_frequency` and the inner optimizer's disagree. "
                f"Received: {self.ema_overwrite_frequency} and {frequency}"
            )

    def take_over(self, optimizer):
        """The inner optimizer's `gradient_accumulation_steps` and `use_ema`
        (with its `ema_overwrite_frequency`) become these options (with
        Keras' overwrite at the end of `fit`); the inner one then keeps
        neither, so it creates no second set of accumulators or averages."""
        if optimizer.gradient_accumulation_steps:
            self.accumulate_steps = optimizer.gradient_accumulation_steps
            optimizer.gradient_accumulation_steps = None
        if optimizer.use_ema:
            self.ema = float(optimizer.ema_momentum)
            self.ema_overwrite_at_end = True
            self.ema_overwrite_frequency = (
                optimizer.ema_overwrite_frequency or self.ema_overwrite_frequency
            )
            optimizer.use_ema = False
            optimizer.ema_overwrite_frequency = None

    def get_config(self):
        """The options as they go into the optimizer's config."""
        config = dataclasses.asdict(self)
        config["gradient_hook"] = keras.saving.serialize_keras_object(self.gradient_hook)
        config["log"] = list(self.log)
        return config

    @classmethod
    def pop_config(cls, config, custom_objects=None):
        """Pops the options out of an optimizer's `config` (missing ones
        take their defaults).

        Returns:
            The options, by name, as the constructor takes them.
        """
        options = {f.name: config.pop(f.name) for f in dataclasses.fields(cls) if f.name in config}
        hook = options.get("gradient_hook")
        if hook is not None:
            options["gradient_hook"] = keras.saving.deserialize_keras_object(
                hook, custom_objects=custom_objects
            )
        return options


def refuse_unknown(kwargs):
    """Refuses keyword arguments that are no option, naming the reason."""
    for arg in _WRAPPED_ONLY_ARGS:
        if arg in kwargs:
            raise ValueError(
                f"LayerwiseOptimizer does not take `{arg}`: set it on the "
                f"inner optimizer. Received: {arg}={kwargs[arg]!r}"
            )
    if kwargs:
        raise ValueError(f"Argument(s) not recognized: {kwargs}")


def check_steps(value):
    """`accumulate_steps` as an int >= 1 (`None` means 1)."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`accumulate_steps` must be an int >= 1 (1: no accumulation). "
            f"Received: accumulate_steps={value!r}"
        )
    return value


def check_momentum(value):
    """`ema` as a float in [0, 1), or `None`."""
    if value is None:
        return None
    if not _validation.is_real_number(value) or not 0 <= value < 1:
        raise ValueError(
            f"`ema` must be a momentum in [0, 1), or None. Received: ema={value!r}"
        )
    return float(value)


def check_overwrite_frequency(value, has_ema):
    """`ema_overwrite_frequency` as an int >= 1, or `None`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`ema_overwrite_frequency` must be an int >= 1, or None. Received: "
            f"ema_overwrite_frequency={value!r}"
        )
    if not has_ema:
        raise ValueError(
            "`ema_overwrite_frequency` needs an EMA: set `ema` too. Received: "
            f"ema_overwrite_frequency={value!r}, ema=None"
        )
    return value


def check_stats(value):
    """`log` as a tuple of names among `STATS`, without duplicates."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or any(s not in STATS for s in value):
        raise ValueError(
            f"`log` must be a tuple of names among {STATS}. Received: log={value!r}"
        )
    return tuple(dict.fromkeys(value))


def exposed(cls):
    """Class decorator: every option readable on the optimizer by its name,
    except those Keras' base class keeps as attributes of its own (the
    constructor sets those)."""
    own = set(vars(cls))
    for field in dataclasses.fields(Options):
        if field.name not in own and field.name not in _KERAS_ATTRIBUTES:
            setattr(cls, field.name, _Option(field.name))
    return cls


# Options Keras' base optimizer assigns in its constructor.
_KERAS_ATTRIBUTES = ("ema_overwrite_frequency",)


class _Option:
    """`optimizer.<name>` reads `optimizer.options.<name>`; setting it is
    refused (the stages took the value at construction: a new value would
    silently change nothing)."""

    def __init__(self, name):
        self.name = name
        self.__doc__ = f"The `{name}` option (read-only; see `LayerwiseOptimizer`)."

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return getattr(instance.options, self.name)

    def __set__(self, instance, value):
        raise AttributeError(
            f"`{self.name}` is fixed when the optimizer is created: the step's "
            "stages were built with it. Create a new optimizer with the new "
            "value, e.g. `LayerwiseOptimizer.from_config({**optimizer.get_config(), "
            f"{self.name!r}: ...}})` before training. Received: {self.name}={value!r}"
        )
