"""The one protocol every stage of `LayerwiseOptimizer`'s step follows,
and the record a step carries through the stages.

A step is a pipeline of stages (`layerwise/optim/pipeline.py`). Each
stage is one concept in one module under `layerwise/optim/stages/`, and
answers the same questions through the same methods:

- what state it creates: `create` (with the optimizer), `build` (at the
  optimizer's build, for the variables that are not frozen) and `add`
  (for variables unfrozen at runtime), through a `StateMaker`; its state
  is `variables`, saved with the optimizer in that order;
- what it checks before any state exists: `check(plan)`;
- what it does in a step: `run(record, proceed)`, its one verb;
- what it shows: `describe()` (in `repr` and `summary()`).

`run` gets the step's `StepRecord` and `proceed`, the rest of the
pipeline: work before `proceed(record)` happens on the way in (in
pipeline order), work after it on the way out (in reverse order). A stage
that calls `proceed` under a condition (the non-finite guard,
accumulation) decides whether the rest of the step runs; one that keeps
something across `proceed` (a copy of the weights, a snapshot) keeps it
in a local variable, not in the record.
"""

import dataclasses
import weakref

import keras
import numpy as np

from layerwise._internals import optimizers as internals


class Stage:
    """A stage of the step. Subclasses override what they need; the
    defaults create no state, check nothing and show nothing."""

    #: Short name, unique in a pipeline (`pipeline[name]`).
    name = None

    @property
    def enabled(self):
        """Whether the stage runs; a disabled stage is left out of the
        step entirely (it costs nothing)."""
        return True

    def create(self, state):
        """Creates the state that exists from the optimizer's construction
        on (counters, log variables).

        Args:
            state: A `StateMaker`.
        """

    def check(self, plan):
        """Checks what would fail in a step (a transform returning another
        shape), at build and when `set_frozen` changes the plan, before
        any state exists or changes.

        Args:
            plan: The new `Plan`.
        """

    def build(self, state, variables):
        """Creates per-variable state at the optimizer's build.

        Args:
            state: A `StateMaker`.
            variables: The variables that are not frozen, in the order
                their optimizers hold their slots.
        """

    def add(self, state, variables):
        """Creates per-variable state for variables unfrozen at runtime;
        their values start from the variables' current values where that
        matters (an average).

        Args:
            state: A `StateMaker`.
            variables: The variables unfrozen.
        """

    def use_plan(self, plan):
        """Takes the plan the next steps run with (at build, after
        `set_frozen`, after a change of weight decay)."""

    @property
    def variables(self):
        """The stage's state, in a fixed order: saved with the optimizer."""
        return []

    @property
    def keeps_per_variable_state(self):
        """Whether the stage holds state per variable that an optimizer
        created at runtime must keep (see `LayerwiseOptimizer.set_frozen`)."""
        return False

    def run(self, record, proceed):
        """Does the stage's part of one step.

        Args:
            record: The step's `StepRecord`; a stage may replace its
                gradients (and, before the update, its variables).
            proceed: Callable `record -> None` running the rest of the
                pipeline. Not calling it ends the step here (the stages
                before still finish their way out).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `run`.")

    def describe(self):
        """A short phrase for `repr` / `summary()` (e.g.
        `"accumulate_steps=4"`), or `None` when there is nothing to say."""
        return None

    def __repr__(self):
        return f"<stage {self.name}: {self.describe() or ('on' if self.enabled else 'off')}>"


@dataclasses.dataclass(eq=False)
class StepRecord:
    """What one step carries from stage to stage.

    Attributes:
        plan: The `Plan` the step runs with.
        grads: The step's gradients; after freezing, those of the
            variables updated this step (non-frozen, with a gradient), in
            the same order as `variables`.
        variables: The variables (all of them as received; after freezing,
            the ones updated this step).
        positions: After freezing, each variable's position in
            `plan.trainable`.
        overwrites: `(gradient, variable)` pairs of variables Keras
            overwrites with their gradient instead of updating.
        step: The inner optimizer's step counter (its value is the step
            count before this step until the step-count stage advances it).
        reduced: Whether the gradients were summed over `tf.distribute`
            replicas.
        groups: Set before the update: `(UpdateGroup, indices into
            variables, learning rate)` per update group present this step.
        optimizer_variables: Callable returning every variable of the
            optimizer (what a conditional branch may write).
    """

    plan: object
    grads: list
    variables: list
    step: object
    optimizer_variables: object
    positions: list = dataclasses.field(default_factory=list)
    overwrites: list = dataclasses.field(default_factory=list)
    reduced: bool = False
    groups: list = dataclasses.field(default_factory=list)
    _index_of: dict = dataclasses.field(default=None, repr=False)

    def locate(self, members):
        """Indices into `variables` of the plan positions `members` that
        are present this step (all of them in the usual step)."""
        if self._index_of is None:
            if list(self.positions) == list(range(len(self.plan.trainable))):
                self._index_of = False  # the identity: no lookup
            else:
                self._index_of = {p: i for i, p in enumerate(self.positions)}
        if self._index_of is False:
            return list(members)
        return [self._index_of[p] for p in members if p in self._index_of]

    def branch_state(self):
        """Every variable a conditional branch of the step may read or
        write: JAX's branches must be pure functions of them."""
        return (
            list(self.optimizer_variables())
            + list(self.variables)
            + [v for _, v in self.overwrites]
        )


class StateMaker:
    """Creates optimizer state for the stages: variables owned by the
    `LayerwiseOptimizer` (tracked, saved and handed to JAX's stateless
    step like any optimizer variable).

    Args:
        optimizer: The `LayerwiseOptimizer`.
    """

    def __init__(self, optimizer):
        # Weak: the optimizer holds this maker through its pipeline.
        self._optimizer = weakref.ref(optimizer)

    def scalar(self, name, dtype="float32", value=0):
        """A scalar written by the first replica only (a counter, a
        multiplier, a diagnostic)."""
        return self._optimizer().add_variable(
            shape=(), initializer=keras.initializers.Constant(value), dtype=dtype,
            aggregation="only_first_replica", name=name,
        )

    def vector(self, name, values):
        """A float32 vector holding `values`, written by the first replica
        only (the rules' constant multipliers)."""
        variable = self._optimizer().add_variable(
            shape=(len(values),), initializer="zeros", dtype="float32",
            aggregation="only_first_replica", name=name,
        )
        variable.assign(np.asarray(values, "float32"))
        return variable

    def slot(self, variable, name):
        """A zero-initialized variable shaped like `variable`."""
        return self._optimizer().add_variable_from_reference(variable, name)

    def key(self, variable):
        """How the optimizer identifies `variable` (Keras' own key)."""
        return internals.variable_key(self._optimizer(), variable)
