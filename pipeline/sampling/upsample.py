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

import torch
from torch import Tensor

from pipeline.diffusion import create_diffusion
from pipeline.diffusion.noise_aug import noise_augment
from pipeline.sampling.inpaint import check_edit_inputs, to_model_image
from pipeline.sampling.text_to_image import sample_text_to_image
from pipeline.text import Tokenizer

GLIDE_UPSAMPLE_STEPS = "fast27"
GLIDE_UPSAMPLE_TEMPERATURE = 0.997


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


@torch.no_grad()
def sample_upsample(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    low_res: Tensor,
    *,
    steps: str = GLIDE_UPSAMPLE_STEPS,
    temperature: float = GLIDE_UPSAMPLE_TEMPERATURE,
    aug_level: int = 0,
    diffusion_steps: int = 1000,
    noise_schedule: str = "linear",
    seed: int = 0,
    batch_size: int = 0,
    device: torch.device | str | None = None,
    known: tuple[Tensor, Tensor] | None = None,
    progress: bool = False,
) -> Tensor:
    """Upsample ``low_res`` (uint8 [N, h, w, 3]), image i with caption ``prompts[i]``; returns
    uint8 [N, H, W, 3] at the model's resolution.

    ``aug_level`` (noise_cond_aug models only): the level at which the low-res inputs are noised
    and which the model is told. ``known``: (source uint8 [H, W, 3], keep bool [H, W]) for the
    inpainting cascade; the kept pixels of the source come out exactly.
    """
    check_low_res(model, low_res, len(prompts))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    condition = images_to_model(low_res)  # [N, 3, h, w]
    image_kwargs: dict[str, Tensor] = {}
    if model.noise_cond_aug:
        levels = torch.full((len(prompts),), int(aug_level), dtype=torch.long)
        generator = torch.Generator().manual_seed(int(seed) + 1)  # apart from the sampler's
        condition = noise_augment(
            create_diffusion(diffusion_steps, noise_schedule), condition, levels, generator
        )
        image_kwargs["aug_level"] = levels
    elif aug_level:
        raise ValueError("aug_level needs a model trained with noise_cond_aug")
    image_kwargs["low_res"] = condition
    denoised_fn = None
    if known is not None:
        source, keep = known
        check_edit_inputs(source, keep, int(model.image_size))
        source_d = to_model_image(source).to(device)  # [1, 3, H, W]
        keep_d = keep.to(torch.float32)[None, None].to(device)  # [1, 1, H, W]

        def denoised_fn(pred_xstart: Tensor) -> Tensor:
            return pred_xstart * (1.0 - keep_d) + source_d * keep_d

        if model.inpaint:
            image_kwargs.update(inpaint_image=source_d.cpu(), inpaint_mask=keep_d.cpu())
    elif model.inpaint:
        raise ValueError("an inpainting upsampler needs the known high-res region (known=...)")
    samples = sample_text_to_image(
        model,
        tokenizer,
        prompts,
        guidance_scale=1.0,  # GLIDE does not guide the upsampler
        steps=steps,
        diffusion_steps=diffusion_steps,
        noise_schedule=noise_schedule,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
        image_kwargs=image_kwargs,
        denoised_fn=denoised_fn,
        init_noise_scale=float(temperature),
    )
    if known is None:
        return samples
    source, keep = known
    kept = keep[None, :, :, None].expand_as(samples)
    return torch.where(kept, source[None].expand_as(samples), samples)
