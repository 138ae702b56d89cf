"""Text-guided editing (GLIDE Sec. 3.3): regenerate the masked region of an image.

Mask convention everywhere: 1 / True = keep (known pixel), 0 / False = generate.

With an inpainting model, the model sees the masked source and the mask at every step. With
any model (and for the replacement-only baseline, a text-to-image model that was never fine-tuned
for inpainting), each x0 prediction has its known region replaced by the source. The returned
images carry the source's known pixels exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pipeline.diffusion import SamplerSettings
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.text_to_image import (
    DEFAULT_SETTINGS,
    Conditioning,
    sample_images,
    to_uint8,
)


def to_model_image(image: Tensor) -> Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {list(image.shape)}")
    return image.permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def check_edit_inputs(image: Tensor, keep: Tensor, image_size: int) -> None:
    """Clear errors for inputs an edit cannot use."""
    if tuple(keep.shape) != tuple(image.shape[:2]):
        raise ValueError(
            f"the mask is {keep.shape[1]}x{keep.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}: they must have the same size"
        )
    if tuple(image.shape[:2]) != (image_size, image_size):
        raise ValueError(
            f"the image is {image.shape[1]}x{image.shape[0]}; the model works at "
            f"{image_size}x{image_size}"
        )
    if bool(keep.all()):
        raise ValueError("the mask keeps every pixel: there is nothing to generate")


def paste_known(source: Tensor, keep: Tensor) -> Callable[[Tensor], Tensor]:
    """A denoised_fn that replaces the known region (``keep`` 1, float [1, 1, H, W]) of every x0
    prediction by ``source`` (float [1, 3, H, W] in [-1, 1])."""

    def paste(pred_xstart: Tensor) -> Tensor:
        return pred_xstart * (1.0 - keep) + source * keep

    return paste


def keep_known_pixels(images: Tensor, source: Tensor, keep: Tensor) -> Tensor:
    """uint8 images [N, H, W, 3] with the pixels ``keep`` (bool [H, W]) of ``source`` (uint8
    [H, W, 3]) put back exactly."""
    known = keep[None, :, :, None].expand_as(images)
    return torch.where(known, source[None].expand_as(images), images)


def sample_inpaint(
    sampler: SamplingModel,
    prompts: Sequence[str],
    image: Tensor,
    keep: Tensor,
    settings: SamplerSettings = DEFAULT_SETTINGS,
    *,
    guidance_scale: float = 5.0,
) -> Tensor:
    """Edit ``image`` (uint8 [H, W, 3]) where ``keep`` (bool [H, W]) is False, once per prompt.

    Returns uint8 [N, H, W, 3]. An inpainting model (``model.inpaint``) gets the masked image and
    the mask as inputs; any other model is the replacement-only baseline.
    """
    check_edit_inputs(image, keep, int(sampler.model.image_size))
    source = to_model_image(image)  # [1, 3, H, W]
    keep_mask = keep.to(torch.float32)[None, None]  # [1, 1, H, W]
    device = sampler.device if settings.device is None else torch.device(settings.device)
    inputs = {"inpaint_image": source, "inpaint_mask": keep_mask} if sampler.model.inpaint else {}
    conditioning = Conditioning(
        guidance_scale=guidance_scale,
        image_inputs=inputs,
        denoised_fn=paste_known(source.to(device), keep_mask.to(device)),
    )
    samples = sample_images(sampler, prompts, settings, conditioning)  # [N, 3, H, W] in [-1, 1]
    return keep_known_pixels(to_uint8(samples), image, keep)
