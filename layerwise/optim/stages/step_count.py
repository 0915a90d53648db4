"""The step count: the inner optimizer's `iterations` advance once per
real step, last, so every stage of the step reads the count before it
(schedules, warm-ups, the EMA's first step, diagnostics). Micro-steps of
accumulation and skipped steps do not count, as in Keras."""

from layerwise.optim import stage


class StepCount(stage.Stage):
    """Out: the step count advances by one."""

    name = "step_count"

    def run(self, record, proceed):
        proceed(record)
        record.step.assign_add(1)
