"""Sampling a text-conditional super-resolution model (GLIDE's upsampler).

The low-res images arrive as 8-bit images (base samples quantised to 8 bits, as GLIDE does before
conditioning the upsampler), one per caption. GLIDE samples its upsampler with the "fast27"
respacing, the initial noise scaled by a temperature of 0.997, the same caption and no guidance.

For the inpainting cascade the upsampler receives the whole low-res result and keeps the known
region of the high-res source: each x0 prediction has that region replaced by the source (and a
model with inpainting inputs also sees the masked source), so the known pixels come out exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from pipeline.diffusion import SamplerSettings
from pipeline.diffusion.noise_aug import noise_augment
from pipeline.sampling.inpaint import (
    check_edit_inputs,
    keep_known_pixels,
    paste_known,
    to_model_image,
)
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.text_to_image import Conditioning, sample_images, to_uint8
from pipeline.sampling.tiles import Tiling

GLIDE_UPSAMPLE_STEPS = "fast27"
GLIDE_UPSAMPLE_TEMPERATURE = 0.997
GLIDE_UPSAMPLE_SETTINGS = SamplerSettings(
    steps=GLIDE_UPSAMPLE_STEPS, temperature=GLIDE_UPSAMPLE_TEMPERATURE
)
WHOLE_IMAGE = Tiling()  # GLIDE: one network call over the whole image


def images_to_model(images: Tensor) -> Tensor:
    """uint8 [N, h, w, 3] -> float [N, 3, h, w] in [-1, 1]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 low-res images [N, h, w, 3], got {images.dtype} {list(images.shape)}"
        )
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def check_low_res(model: torch.nn.Module, low_res: Tensor, count: int) -> None:
    """Clear errors for low-res inputs an upsampler cannot use."""
    if not getattr(model, "super_res", False):
        raise ValueError("this model is not a super-resolution model (super_res=False)")
    if low_res.shape[0] != count:
        raise ValueError(f"{low_res.shape[0]} low-res images for {count} captions: give one each")
    side, size = int(low_res.shape[1]), int(model.image_size)
    if low_res.shape[2] != side or side > size or size % side:
        raise ValueError(
            f"low-res images are {low_res.shape[2]}x{side}: they must be square with a side that "
            f"divides the upsampler's {size}"
        )


def _low_res_inputs(
    sampler: SamplingModel, low_res: Tensor, aug_level: int, seed: int
) -> dict[str, Tensor]:
    """The upsampler's ``low_res`` input (noised at ``aug_level`` for a noise_cond_aug model,
    which is also told the level as ``aug_level``)."""
    condition = images_to_model(low_res)  # [N, 3, h, w]
    if not sampler.model.noise_cond_aug:
        if aug_level:
            raise ValueError("aug_level needs a model trained with noise_cond_aug")
        return {"low_res": condition}
    levels = torch.full((low_res.shape[0],), int(aug_level), dtype=torch.long)
    generator = torch.Generator().manual_seed(int(seed) + 1)  # apart from the sampler's
    noised = noise_augment(sampler.diffusion(), condition, levels, generator)
    return {"aug_level": levels, "low_res": noised}


def _known_region(
    sampler: SamplingModel, known: tuple[Tensor, Tensor], device: torch.device
) -> Conditioning:
    """The inpainting cascade's conditioning: x0 predictions keep the source's known region (and
    an inpainting upsampler sees the masked source)."""
    source, keep = known
    check_edit_inputs(source, keep, int(sampler.model.image_size))
    source_d = to_model_image(source).to(device)  # [1, 3, H, W]
    keep_d = keep.to(torch.float32)[None, None].to(device)  # [1, 1, H, W]
    inputs = {"inpaint_image": source_d.cpu(), "inpaint_mask": keep_d.cpu()}
    return Conditioning(
        image_inputs=inputs if sampler.model.inpaint else {},
        denoised_fn=paste_known(source_d, keep_d),
    )


def sample_upsample(
    sampler: SamplingModel,
    prompts: Sequence[str],
    low_res: Tensor,
    settings: SamplerSettings = GLIDE_UPSAMPLE_SETTINGS,
    *,
    aug_level: int = 0,
    known: tuple[Tensor, Tensor] | None = None,
    tiling: Tiling = WHOLE_IMAGE,
    project: bool = False,
) -> Tensor:
    """Upsample ``low_res`` (uint8 [N, h, w, 3]), image i with caption ``prompts[i]``; returns
    uint8 [N, H, W, 3] at the model's resolution. No guidance, as GLIDE; ``settings.temperature``
    scales the initial noise.

    ``aug_level`` (noise_cond_aug models only): the level at which the low-res inputs are noised
    and which the model is told. ``known``: (source uint8 [H, W, 3], keep bool [H, W]) for the
    inpainting cascade; the kept pixels of the source come out exactly. ``tiling``: run the
    network on overlapping tiles of its training crop size (tiles.py; default: whole images).
    ``project``: keep every x0 prediction's block averages equal to the low-res input
    (low_res_projection.py; not GLIDE's, which leaves them to the network).
    """
    check_low_res(sampler.model, low_res, len(prompts))
    inputs = _low_res_inputs(sampler, low_res, aug_level, settings.seed)
    if known is None and sampler.model.inpaint:
        raise ValueError("an inpainting upsampler needs the known high-res region (known=...)")
    device = sampler.device if settings.device is None else torch.device(settings.device)
    region = _known_region(sampler, known, device) if known is not None else Conditioning()
    conditioning = replace(
        region,
        image_inputs={**inputs, **region.image_inputs},
        tiling=tiling,
        project_onto=images_to_model(low_res) if project else None,
    )
    samples = to_uint8(sample_images(sampler, prompts, settings, conditioning))
    return samples if known is None else keep_known_pixels(samples, *known)
