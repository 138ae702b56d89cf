"""Evaluation: inpainting metrics (FID/KID and CLIP score come with the evaluation stage)."""

from pipeline.evaluation.inpainting import (
    band_error,
    boundary_band,
    compare_inpainting,
    evaluation_masks,
    generated_region_crops,
)

__all__ = [
    "band_error",
    "boundary_band",
    "compare_inpainting",
    "evaluation_masks",
    "generated_region_crops",
]
