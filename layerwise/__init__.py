"""layerwise: control how each parameter learns, in Keras 3."""

from layerwise.optimizer import LayerwiseOptimizer
from layerwise.rules import Rule
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
    "GradientTransform",
    "LayerwiseOptimizer",
    "PerTensorTransform",
    "Rule",
    "chain",
    "clip_by_global_norm",
    "clip_by_l1_norm",
    "clip_by_norm",
    "clip_by_value",
    "per_variable",
    "scale",
    "summary_rows",
    "zero",
]
