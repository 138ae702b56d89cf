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

from pipeline.diffusion import SamplerSettings
from pipeline.sampling.inpaint import check_edit_inputs, sample_inpaint
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.text_to_image import DEFAULT_SETTINGS, sample_text_to_image
from pipeline.sampling.tiles import Tiling
from pipeline.sampling.upsample import GLIDE_UPSAMPLE_SETTINGS, WHOLE_IMAGE, sample_upsample


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


def _check_pair(base: SamplingModel, upsampler: SamplingModel) -> None:
    low_size, high_size = int(base.model.image_size), int(upsampler.model.image_size)
    if high_size % low_size or not upsampler.model.super_res:
        raise ValueError(
            f"the upsampler ({high_size}px, super_res={upsampler.model.super_res}) does not fit "
            f"the base model ({low_size}px): need a super-resolution model at a multiple of it"
        )


def _sample_base(
    base: SamplingModel,
    prompts: Sequence[str],
    settings: SamplerSettings,
    guidance_scale: float,
    edit: tuple[Tensor, Tensor] | None,
    high_size: int,
) -> Tensor:
    """The base model's uint8 samples: text-to-image, or the edit at the base resolution."""
    if edit is None:
        return sample_text_to_image(base, prompts, settings, guidance_scale=guidance_scale)
    check_edit_inputs(*edit, high_size)
    low_image, low_keep = downsample_edit(*edit, int(base.model.image_size))
    if bool(low_keep.all()):
        raise ValueError("after downsampling, the mask keeps every base pixel")
    return sample_inpaint(
        base, prompts, low_image, low_keep, settings, guidance_scale=guidance_scale
    )


def sample_cascade(
    base: SamplingModel,
    upsampler: SamplingModel,
    prompts: Sequence[str],
    base_settings: SamplerSettings = DEFAULT_SETTINGS,
    upsample_settings: SamplerSettings = GLIDE_UPSAMPLE_SETTINGS,
    *,
    guidance_scale: float = 3.0,
    aug_level: int = 0,
    edit: tuple[Tensor, Tensor] | None = None,
    tiling: Tiling = WHOLE_IMAGE,
    project: bool = False,
) -> CascadeResult:
    """One image per caption through base model (``base_settings``, classifier-free guidance at
    ``guidance_scale``) and upsampler (``upsample_settings``, no guidance).

    ``edit``: (source uint8 [H, W, 3], keep bool [H, W]) at the upsampler's resolution, for the
    inpainting cascade (``base`` is then an inpainting model, or any model for the
    replacement-only baseline). ``tiling``: the upsampler's tiles (tiles.py; default none); ``project``: its x0
    predictions kept consistent with the base samples (low_res_projection.py).
    """
    _check_pair(base, upsampler)
    high_size = int(upsampler.model.image_size)
    low = _sample_base(base, prompts, base_settings, guidance_scale, edit, high_size)
    # uint8: the base samples quantised to 8 bits, as GLIDE conditions its upsampler
    high = sample_upsample(
        upsampler,
        prompts,
        low,
        upsample_settings,
        aug_level=aug_level,
        known=edit,
        tiling=tiling,
        project=project,
    )
    return CascadeResult(base=low, upsampled=high)
