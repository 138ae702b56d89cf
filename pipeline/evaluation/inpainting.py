"""Inpainting quality against ground truth: error near the mask boundary, region crops for FID.

GLIDE's point about replacement-only sampling is edge artefacts: a model that was not trained to
see the known region produces content that does not continue across the mask boundary. The band
error measures exactly there: the mean absolute error, against the original image, of the
generated pixels within ``width`` pixels of a known pixel.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from pipeline.sampling import SamplerSettings, SamplingModel


def boundary_band(keep: Tensor, width: int) -> Tensor:
    """Generated pixels within ``width`` pixels (Chebyshev) of a known one.

    keep: bool [..., H, W] (True = known). Returns bool of the same shape.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    shape = keep.shape
    known = keep.reshape(-1, 1, *shape[-2:]).float()
    near = F.max_pool2d(known, kernel_size=2 * width + 1, stride=1, padding=width) > 0
    return (near & ~known.bool()).reshape(shape)


def band_error(edited: Tensor, target: Tensor, keep: Tensor, width: int = 2) -> Tensor:
    """Mean absolute error per image (in [0, 1] intensity units) over the boundary band.

    edited, target: uint8 [B, H, W, 3]; keep: bool [B, H, W] or [H, W]. Images with an empty
    band (nothing generated, or nothing known) give NaN, which callers must leave out.
    """
    keep = keep.expand(edited.shape[:-1])
    band = boundary_band(keep, width)[..., None].float()  # [B, H, W, 1]
    error = (edited.float() - target.float()).abs() / 255.0
    total = (error * band).sum(dim=(1, 2, 3))
    count = band.sum(dim=(1, 2, 3)) * edited.shape[-1]
    return total / count  # 0/0 -> NaN for an empty band


def generated_region_crops(images: Tensor, keep: Tensor, size: int) -> Tensor:
    """The bounding box of each image's generated region, resized to ``size`` (for FID of the
    inpainted region). images uint8 [B, H, W, 3]; keep bool [B, H, W]. Returns uint8
    [B, size, size, 3]; an image with nothing generated gives its whole frame."""
    crops = []
    for image, known in zip(images, keep.expand(images.shape[:-1]), strict=True):
        rows = (~known).any(dim=1).nonzero().flatten()
        cols = (~known).any(dim=0).nonzero().flatten()
        whole = len(rows) == 0
        region = image if whole else image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        chw = region.permute(2, 0, 1)[None].float()
        resized = F.interpolate(chw, size=(size, size), mode="bilinear", align_corners=False)
        crops.append(resized[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0))
    return torch.stack(crops)


def evaluation_masks(count: int, size: int, seed: int = 0) -> Tensor:
    """Fixed held-out masks bool [count, size, size] (True = keep): rectangles and brush strokes,
    the same for every model compared."""
    from pipeline.data.masks import random_masks

    generator = torch.Generator().manual_seed(seed)
    masks, _ = random_masks(count, size, {"rectangle": 0.5, "brush": 0.5}, generator)
    return masks[:, 0].bool()


def compare_inpainting(
    models: dict[str, SamplingModel],
    examples: list[dict],
    settings: SamplerSettings,
    *,
    guidance_scale: float = 5.0,
    band_width: int = 2,
) -> dict[str, dict[str, object]]:
    """Edit held-out images (their own captions, fixed masks) with each model; compare with the
    ground truth. An inpainting model is used as such, any other as the replacement-only
    baseline. Example i is sampled with seed ``settings.seed + i`` (and masks of that seed).

    Returns name -> {"band_error": mean over images, "band_errors": per image (NaN: no band),
    "edited": uint8 [N, H, W, 3],
    "region_crops": uint8 crops of the generated regions (FID input)}; plus "ground_truth".
    """
    from pipeline.sampling.inpaint import sample_inpaint

    images = torch.stack([torch.as_tensor(ex["base"]) for ex in examples])
    size = images.shape[1]
    keep = evaluation_masks(len(examples), size, settings.seed)
    results: dict[str, dict[str, object]] = {}
    for name, sampler in models.items():
        edited = torch.cat(
            [
                sample_inpaint(
                    sampler,
                    [ex["caption"]],
                    images[i],
                    keep[i],
                    replace(settings, seed=settings.seed + i),
                    guidance_scale=guidance_scale,
                )
                for i, ex in enumerate(examples)
            ]
        )
        errors = band_error(edited, images, keep, band_width)
        results[name] = {
            "band_error": float(errors[~errors.isnan()].mean()),
            "band_errors": errors,
            "edited": edited,
            "region_crops": generated_region_crops(edited, keep, size),
        }
    results["ground_truth"] = {"region_crops": generated_region_crops(images, keep, size)}
    return results
