"""layerwise: control how each parameter learns, in Keras 3."""

from layerwise import callbacks
from layerwise import layers
from layerwise import ops
from layerwise.capture import Capture
from layerwise.capture import capture
from layerwise.normalizations import SpectralNorm
from layerwise.normalizations import WeightNorm
from layerwise.normalizations import spectral_norm
from layerwise.normalizations import weight_norm
from layerwise.observe import LastValue
from layerwise.observe import Observe
from layerwise.observe import ObservedModel
from layerwise.observe import observe
from layerwise.ema_swap import ema_weights
from layerwise.optimizer import LayerwiseOptimizer
from layerwise.parametrize import FunctionParametrization
from layerwise.parametrize import Parametrization
from layerwise.parametrize import Parametrized
from layerwise.parametrize import is_parametrized
from layerwise.parametrize import parametrizations
from layerwise.parametrize import parametrize
from layerwise.parametrize import remove_parametrization
from layerwise.recipes import detect_blocks
from layerwise.recipes import discriminative
from layerwise.recipes import layer_decay
from layerwise.rules import Rule
from layerwise.schedules import LinearWarmup
from layerwise.schedules import warmup
from layerwise.set_learning_rate import SetLearningRate
from layerwise.summary import plan_rows as summary_rows
from layerwise.transforms import GradientTransform
from layerwise.transforms import PerTensorTransform
from layerwise.transforms import chain
from layerwise.transforms import clip_by_global_norm
from layerwise.transforms import clip_by_l1_norm
from layerwise.transforms import clip_by_norm
from layerwise.transforms import clip_by_value
from layerwise.transforms import per_variable
from layerwise.transforms import scale
from layerwise.transforms import zero

__version__ = "0.1.0"

__all__ = [
    "Capture",
    "FunctionParametrization",
    "GradientTransform",
    "LastValue",
    "LayerwiseOptimizer",
    "LinearWarmup",
    "Observe",
    "ObservedModel",
    "Parametrization",
    "Parametrized",
    "PerTensorTransform",
    "Rule",
    "SetLearningRate",
    "SpectralNorm",
    "WeightNorm",
    "callbacks",
    "capture",
    "chain",
    "clip_by_global_norm",
    "clip_by_l1_norm",
    "clip_by_norm",
    "clip_by_value",
    "detect_blocks",
    "discriminative",
    "ema_weights",
    "is_parametrized",
    "layer_decay",
    "layers",
    "observe",
    "ops",
    "parametrizations",
    "parametrize",
    "per_variable",
    "remove_parametrization",
    "scale",
    "spectral_norm",
    "summary_rows",
    "warmup",
    "weight_norm",
    "zero",
]
