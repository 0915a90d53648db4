"""The step of `LayerwiseOptimizer` as an ordered pipeline of stages.

`default_stages` below is the step, outermost stage first; each stage's
module says what it does on the way in and on the way out (see
`layerwise/optim/stage.py` for the protocol). What happens, in order:

    freezing            in   frozen variables and missing gradients out
    cross_replica       in   gradients summed over tf.distribute replicas
    finite_guard        in   a step with a NaN/Inf gradient is skipped
    accumulation        in   micro-steps accumulate; the real step goes on
    gradient_processing in   hook, rule transforms, clipping
    diagnostics         in   snapshot of the weights (if a statistic needs it)
    learning_rates      in   each update group's rate: base rate x multipliers
    weight_decay        in   Keras' decoupled decay, per group at its rate
    update_transforms   in   a copy of the weights of rules with `update=`
    grouped_update      in   one update call per group (the optimizer's rule)
    update_transforms   out  the rules' update transforms land
    constraints         out  Keras' `variable.constraint`
    projections         out  the rules' `project=` projections
    diagnostics         out  per-rule statistics written
    moving_average      out  EMA of the weights
    step_count          out  the step count advances

A new stage is one module with one class and one entry in
`default_stages`.
"""

from layerwise.optim.stages import accumulation
from layerwise.optim.stages import constraints
from layerwise.optim.stages import cross_replica
from layerwise.optim.stages import diagnostics
from layerwise.optim.stages import ema
from layerwise.optim.stages import finite_guard
from layerwise.optim.stages import freezing
from layerwise.optim.stages import gradient_processing
from layerwise.optim.stages import grouped_update
from layerwise.optim.stages import learning_rates
from layerwise.optim.stages import projections
from layerwise.optim.stages import step_count
from layerwise.optim.stages import update_transforms
from layerwise.optim.stages import weight_decay


def default_stages(options, rules, optimizer_of_rule, updaters, key):
    """`LayerwiseOptimizer`'s stages, outermost first.

    Args:
        options: The optimizer's `Options`.
        rules: Its bound rules.
        optimizer_of_rule: Per rule, the index of its optimizer or `None`.
        updaters: Its `Updaters`.
        key: `variable -> key`, how it identifies a variable.
    """
    return [
        freezing.Freezing(options.skip_frozen_gradients, key),
        cross_replica.CrossReplica(),
        finite_guard.FiniteGuard(options.skip_nonfinite),
        accumulation.Accumulation(options.accumulate_steps, key),
        step_count.StepCount(),
        ema.MovingAverage(
            options.ema, options.ema_bias_correction, key, options.ema_overwrite_frequency
        ),
        gradient_processing.GradientProcessing(rules, options.gradient_hook, updaters),
        diagnostics.Diagnostics(options.log, rules, optimizer_of_rule, updaters),
        projections.Projections(rules),
        constraints.Constraints(),
        learning_rates.LearningRates(rules, updaters),
        weight_decay.WeightDecay(updaters),
        update_transforms.UpdateTransforms(rules),
        grouped_update.GroupedUpdate(updaters),
    ]


class Pipeline:
    """Ordered stages sharing the `Stage` protocol.

    Args:
        stages: The stages, outermost first, with unique names.
    """

    def __init__(self, stages):
        self.stages = tuple(stages)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names) or None in names:
            raise ValueError(f"Stages must have unique names. Received: {names}")
        # A stage is on or off for the optimizer's life (its options are
        # fixed): resolved once, not at every step.
        self._active = tuple(s for s in self.stages if s.enabled)

    def __iter__(self):
        return iter(self.stages)

    def __len__(self):
        return len(self.stages)

    def __getitem__(self, name):
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"No stage named {name!r}. Stages are {[s.name for s in self.stages]}")

    def create(self, state):
        for stage in self.stages:
            stage.create(state)

    def check(self, plan):
        for stage in self.stages:
            stage.check(plan)

    def build(self, state, variables):
        for stage in self.stages:
            stage.build(state, variables)

    def add(self, state, variables):
        for stage in self.stages:
            stage.add(state, variables)

    def use_plan(self, plan):
        for stage in self.stages:
            stage.use_plan(plan)

    @property
    def variables(self):
        """Every stage's state, in pipeline order."""
        return [v for stage in self.stages for v in stage.variables]

    @property
    def keeps_per_variable_state(self):
        return any(s.keeps_per_variable_state for s in self._active)

    def run(self, record):
        """Runs one step through the enabled stages."""
        active = self._active

        def proceed_from(index):
            def proceed(current):
                if index < len(active):
                    active[index].run(current, proceed_from(index + 1))

            return proceed

        proceed_from(0)(record)

    def describe(self):
        """What the enabled stages say of themselves, in pipeline order."""
        return [d for d in (s.describe() for s in self._active) if d]

    def __repr__(self):
        return "Pipeline([" + ", ".join(s.name for s in self.stages) + "])"
