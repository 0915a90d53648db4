"""Every reach into Keras' trainer and layer internals made by `observe`,
`capture` and the optimizer, in one place.

`tests/internals/test_trainers.py` fails loudly if Keras moves any of them.
"""

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import get_stateless_scope


def current_stateless_scope():
    """The innermost `keras.StatelessScope`, or `None` outside of one."""
    return get_stateless_scope()


def discards_updates_to(variable):
    """Whether an assignment to `variable` now would be silently dropped.

    That is the case inside a `StatelessScope` that does not map `variable`:
    the scope records the update, but whoever opened it only collects the
    variables it mapped (on JAX, `stateless_call` collects the trainable and
    non-trainable variables, never the metric variables).
    """
    scope = get_stateless_scope()
    return scope is not None and scope.get_current_value(variable) is None


def collects_updates_to(variable):
    """Whether the current `StatelessScope` maps `variable`, so that whoever
    opened it keeps what is assigned to it.

    On JAX, the metrics phase of a train/test step
    (`JAXTrainer._update_metrics_variables`, which runs `compute_metrics`)
    is such a scope for every metric variable of the model.
    """
    scope = get_stateless_scope()
    return scope is not None and scope.get_current_value(variable) is not None


def escaped_its_trace(value):
    """Whether `value` is a JAX tracer of a traced function other than the
    one running now: one that has returned, such as a loop body
    (`lax.scan`, `while_loop`) or a `jax.checkpoint`.

    JAX refuses such a value only once the whole step is compiled, with an
    error that cannot name the layer that kept it; this check lets that
    layer say so itself. It reads JAX's private `Tracer._trace` and
    `core.trace_ctx`.
    """
    if keras.backend.backend() != "jax":
        return False
    import jax
    from jax._src import core

    return isinstance(value, jax.core.Tracer) and (
        value._trace is not core.trace_ctx.trace
    )


def is_train_or_test_forward():
    """Whether the current stateless scope is JAX's `fit`/`evaluate` forward.

    `JAXTrainer.compute_loss_and_updates` calls `stateless_call` with
    `return_losses=True`, which opens the scope with `collect_losses=True`;
    `predict` and shape inference do not collect losses.
    """
    scope = get_stateless_scope()
    return scope is not None and scope.collect_losses


def calling_layer():
    """The layer whose `call` is running now, or `None`.

    `Layer.__call__` opens a name scope with `caller=layer` around `call`.
    """
    stack = global_state.get_global_attribute("name_scope_stack")
    for scope in reversed(stack or []):
        if isinstance(scope.caller, keras.layers.Layer):
            return scope.caller
    return None


def sublayers(layer):
    """The layers tracked directly by `layer`, in the order they were set."""
    return list(layer._layers)


def nested_layers(model):
    """Every layer below `model`, depth first, each once."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def optimizer_value_reader(model, variables):
    """A function returning the current values of some of
    `model.optimizer`'s variables.

    During JAX `fit`, the newest values live in the trainer's state
    (`model._jax_state`, written back to the variables only at epoch ends);
    reading that state avoids a full `jax_state_sync()` every batch. The
    variables' places in that state are looked up once, here.
    """
    if keras.backend.backend() != "jax":
        return lambda: [v.value for v in variables]
    index = {id(v): i for i, v in enumerate(model.optimizer.variables)}
    places = [index[id(v)] for v in variables]

    def read():
        state = getattr(model, "_jax_state", None)
        if state and not getattr(model, "_jax_state_synced", True):
            values = state.get("optimizer_variables")
            if values is not None:
                return [values[i] for i in places]
        return [v.value for v in variables]

    return read


def check_before_trace(fn, *args):
    """On JAX, runs `fn` on `keras.KerasTensor`s (shapes and dtypes only).

    Keras' JAX trainer takes the values out of the model's and optimizer's
    variables before it traces the train step, so an error raised while
    tracing leaves them empty. `LayerwiseOptimizer.build` runs the gradient
    hook and the transforms through here first, so their errors come before
    that. TensorFlow and torch raise in the step before any assignment, with
    the variables intact: nothing to do there (and user hooks with side
    effects are not called one extra time).
    """
    if keras.backend.backend() != "jax":
        return None
    from keras.src import backend

    return backend.compute_output_spec(fn, *args)


def make_train_function_with(model, wrap):
    """A fresh train function of `model` whose steps run `wrap(train_step)`.

    Keras' trainers build the train function around `model.train_step`:
    TensorFlow and JAX take it when the function is made, torch looks it up
    at every call. While the function is made, an instance attribute shadows
    the method with the wrapped step, which also gives the JAX jit a
    function of its own: jit caches traces by the function it compiles, and
    two train functions of the same bound `train_step` would share one
    trace. The returned function applies `wrap` again around each call for
    torch. `model.train_function` is left as it was.
    """
    previous = model.train_function
    step = wrap(model.train_step)
    model.train_step = step
    try:
        model.make_train_function(force=True)
        function = model.train_function
    finally:
        del model.train_step
        model.train_function = previous
    return wrap(function)


def write_back_state(model):
    """Writes the state a running `fit` holds into the model's and the
    optimizer's variables, and makes its next step read them again.

    JAX's trainer keeps the state in `model._jax_state` between steps and
    writes it back only at epoch ends; a callback that changes which
    variables train, or what state the optimizer has, in the middle of an
    epoch must call this first. The other backends train on the variables
    themselves.
    """
    if keras.backend.backend() == "jax":
        model.jax_state_sync()


def taken_into_step_state(variable):
    """Whether Keras' JAX trainer has taken `variable`'s value into the state
    of the `fit` step now running.

    Before its steps, `JAXTrainer.fit` moves the values of the model's
    variables and of its optimizer's into the step's state
    (`_purge_model_variables` empties `variable._value`) and writes them
    back when the epoch ends. Custom loops that call `stateless_apply`
    themselves, `train_on_batch` and the other backends leave the values in
    place.
    """
    return keras.backend.backend() == "jax" and variable._value is None
