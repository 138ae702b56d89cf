"""GLIDE models: text transformer, ADM UNet, the text-conditional UNet and its variants."""

from pipeline.models.factory import (
    GLIDE_DEFAULTS,
    GLIDE_KEYS,
    count_parameters,
    count_parameters_meta,
    create_glide_model,
    glide_base_config,
    glide_upsampler_config,
    paper_scale_configs,
    resolve_config,
    widen_for_inpainting,
    widen_for_instruct,
    widen_inputs,
)
from pipeline.models.glide_unet import Text2ImUNet

__all__ = [
    "GLIDE_DEFAULTS",
    "GLIDE_KEYS",
    "Text2ImUNet",
    "count_parameters",
    "count_parameters_meta",
    "create_glide_model",
    "glide_base_config",
    "glide_upsampler_config",
    "paper_scale_configs",
    "resolve_config",
    "widen_for_inpainting",
    "widen_for_instruct",
    "widen_inputs",
]
