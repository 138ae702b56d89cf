"""Sampling: text-to-image with classifier-free guidance, image grids."""

from pipeline.sampling.grid import captioned_grid
from pipeline.sampling.text_to_image import is_ddim, sample_text_to_image, to_uint8

__all__ = ["captioned_grid", "is_ddim", "sample_text_to_image", "to_uint8"]
