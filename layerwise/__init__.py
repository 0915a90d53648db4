"""layerwise: control how each parameter learns, in Keras 3."""

from layerwise import callbacks
from layerwise import layers
from layerwise import ops
from layerwise.observation.capture import capture
from layerwise.reparam.normalizations import SpectralNorm
from layerwise.reparam.normalizations import WeightNorm
from layerwise.reparam.normalizations import spectral_norm
from layerwise.reparam.normalizations import weight_norm
from layerwise.observation.observe import Observe
# Deprecated (a plain `keras.Model` reports `observe` metrics on every
# backend): importable for existing code, left out of `__all__`.
from layerwise.observation.observe import ObservedModel
from layerwise.observation.observe import observe
from layerwise.optim.adaptive_clip import adaptive_clip
from layerwise.optim.centralize import centralize
from layerwise.optim.ema_swap import ema_weights
from layerwise.optim.flattened_muon import FlattenedMuon
from layerwise.optim.optimizer import LayerwiseOptimizer
from layerwise.reparam.parametrize import Parametrization
from layerwise.reparam.parametrize import Parametrized
from layerwise.reparam.parametrize import is_parametrized
from layerwise.reparam.parametrize import parametrizations
from layerwise.reparam.parametrize import parametrize
from layerwise.reparam.parametrize import remove_parametrization
from layerwise.recipes.blocks import detect_blocks
from layerwise.recipes.layer_decay import discriminative
from layerwise.recipes.layer_decay import layer_decay
from layerwise.lisa import lisa_rules
from layerwise.recipes.lora_plus import lora_plus
from layerwise.recipes.muon import muon_rules
from layerwise.recipes.mup import mup
from layerwise.recipes.no_decay import no_decay
from layerwise.optim.projections import Projection
from layerwise.optim.projections import max_norm
from layerwise.optim.projections import unit_norm
from layerwise.optim.rules import Rule
from layerwise.optim.schedules import LinearWarmup
from layerwise.optim.schedules import warmup
from layerwise.reparam.set_learning_rate import SetLearningRate
from layerwise.optim.transforms import GradientTransform
from layerwise.optim.transforms import PerTensorTransform
from layerwise.optim.transforms import chain
from layerwise.optim.transforms import clip_by_global_norm
from layerwise.optim.transforms import clip_by_l1_norm
from layerwise.optim.transforms import clip_by_norm
from layerwise.optim.transforms import clip_by_value
from layerwise.optim.transforms import per_variable
from layerwise.optim.transforms import scale
from layerwise.optim.transforms import zero
from layerwise.optim.update_transforms import PerTensorUpdateTransform
from layerwise.optim.update_transforms import UpdateTransform
from layerwise.optim.update_transforms import cautious
from layerwise.optim.update_transforms import clip_update
from layerwise.optim.update_transforms import clip_update_block_rms
from layerwise.optim.update_transforms import per_variable_update
from layerwise.optim.update_transforms import relative_gradient_norm
from layerwise.optim.update_transforms import skip_large_updates
from layerwise.optim.update_transforms import trust_ratio

from layerwise._version import __version__

__all__ = [
    "FlattenedMuon",
    "GradientTransform",
    "LayerwiseOptimizer",
    "LinearWarmup",
    "Observe",
    "Parametrization",
    "Parametrized",
    "PerTensorTransform",
    "PerTensorUpdateTransform",
    "Projection",
    "Rule",
    "SetLearningRate",
    "SpectralNorm",
    "UpdateTransform",
    "WeightNorm",
    "adaptive_clip",
    "callbacks",
    "capture",
    "cautious",
    "centralize",
    "chain",
    "clip_by_global_norm",
    "clip_by_l1_norm",
    "clip_by_norm",
    "clip_by_value",
    "clip_update",
    "clip_update_block_rms",
    "detect_blocks",
    "discriminative",
    "ema_weights",
    "is_parametrized",
    "layer_decay",
    "layers",
    "lisa_rules",
    "lora_plus",
    "max_norm",
    "muon_rules",
    "mup",
    "no_decay",
    "observe",
    "ops",
    "parametrizations",
    "parametrize",
    "per_variable",
    "per_variable_update",
    "relative_gradient_norm",
    "remove_parametrization",
    "scale",
    "skip_large_updates",
    "spectral_norm",
    "trust_ratio",
    "unit_norm",
    "warmup",
    "weight_norm",
    "zero",
]
