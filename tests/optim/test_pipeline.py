"""The step as a pipeline of stages: their order, the way in and out, and
a new stage added as one class and one entry (the protocol is enough for
its state to be created, saved, loaded, shown and run once per real
step)."""

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.optim import pipeline as pipeline_lib
from layerwise.optim import stage as stage_lib

STEP = [
    "freezing", "cross_replica", "finite_guard", "accumulation", "step_count",
    "moving_average", "gradient_processing", "diagnostics", "projections",
    "constraints", "learning_rates", "weight_decay", "update_transforms",
    "grouped_update",
]


class Trace(stage_lib.Stage):
    """Records when it runs; optionally stops the step."""

    def __init__(self, name, log, stop=False, enabled=True):
        self.name = name
        self._log = log
        self._stop = stop
        self._enabled = enabled

    @property
    def enabled(self):
        return self._enabled

    def run(self, record, proceed):
        self._log.append(f"{self.name} in")
        if not self._stop:
            proceed(record)
        self._log.append(f"{self.name} out")


def test_stages_run_in_order_on_the_way_in_and_reversed_on_the_way_out():
    log = []
    pipeline = pipeline_lib.Pipeline(
        [Trace("a", log), Trace("off", log, enabled=False), Trace("b", log), Trace("c", log)]
    )
    pipeline.run(None)
    assert log == ["a in", "b in", "c in", "c out", "b out", "a out"]


def test_a_stage_that_does_not_proceed_ends_the_step_there():
    log = []
    pipeline_lib.Pipeline([Trace("a", log), Trace("b", log, stop=True), Trace("c", log)]).run(None)
    assert log == ["a in", "b in", "b out", "a out"]


def test_stage_names_are_unique_and_looked_up_by_name():
    with pytest.raises(ValueError, match="Stages must have unique names"):
        pipeline_lib.Pipeline([Trace("a", []), Trace("a", [])])
    pipeline = pipeline_lib.Pipeline([Trace("a", [])])
    assert pipeline["a"].name == "a"
    with pytest.raises(KeyError, match="No stage named 'b'"):
        pipeline["b"]


def test_a_stage_must_implement_run():
    class Empty(stage_lib.Stage):
        name = "empty"

    with pytest.raises(NotImplementedError, match="must implement `run`"):
        pipeline_lib.Pipeline([Empty()]).run(None)


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Dense(4, name="body")(inputs))
    return keras.Model(inputs, outputs)


def test_the_optimizer_step_is_the_documented_pipeline():
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1))
    assert [s.name for s in opt.pipeline] == STEP
    assert "grouped_update" in repr(opt.pipeline)


def test_saved_state_is_each_stage_state_in_pipeline_order():
    model = _model()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.1), [lw.Rule("body/.*", lr_scale=0.5, name="body")],
        accumulate_steps=2, ema=0.9, skip_nonfinite=True, log=("lr",),
    )
    opt.build(model.trainable_variables)
    pipeline = opt.pipeline
    expected = (
        [opt.get_rule("body").multiplier.variable]
        + [pipeline["finite_guard"].skipped_steps]
        + pipeline["accumulation"].variables
        + pipeline["moving_average"].variables
        + [pipeline["diagnostics"].log_variables["lr/body"]]
        + list(opt.updaters.variables)
    )
    assert [id(v) for v in opt.variables] == [id(v) for v in expected]
    # Every variable the optimizer created is saved, once.
    assert len({id(v) for v in opt.variables}) == len(opt.variables)


class RealSteps(stage_lib.Stage):
    """A new stage, as a contributor would write it: counts real steps in
    a state variable of its own."""

    name = "real_steps"

    def __init__(self):
        self.count = None

    def create(self, state):
        self.count = state.scalar("real_steps", "int32")

    @property
    def variables(self):
        return [self.count]

    def run(self, record, proceed):
        proceed(record)
        self.count.assign_add(1)

    def describe(self):
        return "counting real steps"


@pytest.fixture
def with_real_steps(monkeypatch):
    default = pipeline_lib.default_stages

    def stages(*args, **kwargs):
        # One entry: after accumulation, so micro-steps do not count.
        stages = default(*args, **kwargs)
        at = [s.name for s in stages].index("accumulation") + 1
        return stages[:at] + [RealSteps()] + stages[at:]

    monkeypatch.setattr(pipeline_lib, "default_stages", stages)


def test_a_new_stage_is_one_class_and_one_entry(with_real_steps, tmp_path, jit_compile):
    model = _model()
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), accumulate_steps=2)
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    x = np.random.default_rng(0).normal(size=(20, 3)).astype("float32")
    y = np.zeros((20, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)  # 10 micro, 5 real
    stage = opt.pipeline["real_steps"]
    assert int(keras.ops.convert_to_numpy(stage.count)) == 5
    assert any(v is stage.count for v in opt.variables)
    assert "counting real steps" in repr(opt)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    count = loaded.optimizer.pipeline["real_steps"].count
    assert int(keras.ops.convert_to_numpy(count)) == 5
