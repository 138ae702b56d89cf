"""The GLIDE cascade: the (guided) base model, then the upsampler on its 8-bit samples.

Text-to-image: base samples at the base resolution with classifier-free guidance, quantised to
8 bits, then upsampled with the same caption, "fast27" steps, temperature 0.997, no guidance.

Editing: the source image and mask come at the upsampler's resolution. The base (inpainting)
model edits their downsampled versions (a low-res pixel counts as known only where all its
high-res pixels are); the upsampler then receives the whole low-res result and keeps the known
region of the high-res source, as GLIDE's inpainting notebook does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.sampling.inpaint import check_edit_inputs, sample_inpaint
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.text_to_image import sample_text_to_image
from pipeline.sampling.upsample import (
    GLIDE_UPSAMPLE_STEPS,
    GLIDE_UPSAMPLE_TEMPERATURE,
    sample_upsample,
)


@dataclass
class CascadeResult:
    """Both resolutions of every image, caption-major: uint8 [N, h, w, 3] and [N, H, W, 3]."""

    base: Tensor
    upsampled: Tensor


def downsample_edit(image: Tensor, keep: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """A high-res edit (uint8 [H, W, 3], keep bool [H, W]) at ``size``: the image area-averaged
    (as the shards' base images are made), a pixel kept only if all its high-res pixels are."""
    side = int(image.shape[0])
    if side % size:
        raise ValueError(f"the image side {side} is not a multiple of the base model's {size}")
    factor = side // size
    pooled = F.avg_pool2d(image.permute(2, 0, 1)[None].float(), factor)  # [1, 3, size, size]
    low = pooled[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
    generate = F.max_pool2d((~keep).float()[None, None], factor)[0, 0] > 0
    return low.contiguous(), ~generate


def sample_cascade(
    base: SamplingModel,
    upsampler: SamplingModel,
    prompts: Sequence[str],
    *,
    guidance_scale: float = 3.0,
    base_steps: str = "100",
    upsample_steps: str = GLIDE_UPSAMPLE_STEPS,
    temperature: float = GLIDE_UPSAMPLE_TEMPERATURE,
    aug_level: int = 0,
    seed: int = 0,
    batch_size: int = 0,
    device: torch.device | str | None = None,
    threshold: float | None = None,
    edit: tuple[Tensor, Tensor] | None = None,
    progress: bool = False,
) -> CascadeResult:
    """One image per caption through base model and upsampler.

    ``edit``: (source uint8 [H, W, 3], keep bool [H, W]) at the upsampler's resolution, for the
    inpainting cascade (``base`` is then an inpainting model, or any model for the
    replacement-only baseline).
    """
    low_size, high_size = int(base.model.image_size), int(upsampler.model.image_size)
    if high_size % low_size or not upsampler.model.super_res:
        raise ValueError(
            f"the upsampler ({high_size}px, super_res={upsampler.model.super_res}) does not fit "
            f"the base model ({low_size}px): need a super-resolution model at a multiple of it"
        )
    common = dict(seed=seed, batch_size=batch_size, device=device, progress=progress)
    base_settings = dict(
        guidance_scale=guidance_scale,
        steps=base_steps,
        diffusion_steps=base.diffusion_steps,
        noise_schedule=base.noise_schedule,
        threshold=threshold,
        **common,
    )
    if edit is not None:
        check_edit_inputs(*edit, high_size)
        low_image, low_keep = downsample_edit(*edit, low_size)
        if bool(low_keep.all()):
            raise ValueError("after downsampling, the mask keeps every base pixel")
        low = sample_inpaint(
            base.model, base.tokenizer, prompts, low_image, low_keep, **base_settings
        )
    else:
        low = sample_text_to_image(base.model, base.tokenizer, prompts, **base_settings)
    high = sample_upsample(
        upsampler.model,
        upsampler.tokenizer,
        prompts,
        low,  # uint8: the base samples quantised to 8 bits, as GLIDE conditions its upsampler
        steps=upsample_steps,
        temperature=temperature,
        aug_level=aug_level,
        diffusion_steps=upsampler.diffusion_steps,
        noise_schedule=upsampler.noise_schedule,
        known=edit,
        **common,
    )
    return CascadeResult(base=low, upsampled=high)
