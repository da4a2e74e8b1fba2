"""Generator networks: diffusers models extended by subclassing, processors and hooks."""

from .components import Components, load_components, sd15_components, tiny_components
from .fusion import aggregate_maps, fuse_features, mix_positions, restrict_map
from .fusion_controlnet import FUSION_CONFIG_KEYS, FusionControlNetModel

__all__ = [
    "FUSION_CONFIG_KEYS",
    "Components",
    "FusionControlNetModel",
    "aggregate_maps",
    "fuse_features",
    "load_components",
    "mix_positions",
    "restrict_map",
    "sd15_components",
    "tiny_components",
]
