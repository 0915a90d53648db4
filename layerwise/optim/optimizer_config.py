"""Keras optimizers from their saved configs, on any backend.

A leaf module: `Rule.from_config` and the optimizer's own `from_config`
both rebuild Keras optimizers, and neither should import the other's
module for it.
"""

import keras


def deserialize_optimizer(config, custom_objects=None):
    """A Keras optimizer from its config, on any backend.

    Keras' torch optimizers are backend subclasses and save their own
    module (`keras.src.backend.torch.optimizers.torch_adamw`), which other
    backends cannot import; their public class is `keras.optimizers.<name>`.
    (`keras.optimizers.deserialize` would handle that, but returns the
    class name instead of an optimizer for some classes, e.g. `Lamb`.)
    """
    config = dict(config)
    if str(config.get("module", "")).startswith("keras.src.backend."):
        config["module"] = "keras.optimizers"
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
