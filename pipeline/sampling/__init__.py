"""Sampling: text-to-image with classifier-free guidance, model loading, image grids."""

from pipeline.sampling.grid import captioned_grid
from pipeline.sampling.loading import SamplingModel, load_sampling_model, tokenizer_for
from pipeline.sampling.text_to_image import is_ddim, sample_text_to_image, to_uint8

__all__ = [
    "SamplingModel",
    "captioned_grid",
    "is_ddim",
    "load_sampling_model",
    "sample_text_to_image",
    "to_uint8",
    "tokenizer_for",
]
