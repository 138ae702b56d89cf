"""CLIP-guided sampling (GLIDE Sec. 2.2): the base model without classifier-free guidance, its
samples steered by the gradient of a noised CLIP's similarity with the caption.

At every step the sampler calls cond_fn(x_t, t) with the ORIGINAL timestep t of the 1000-step
schedule (also after respacing), which is what the noised CLIP was trained on; the gradient
s * grad_x [exp(logit_scale) <z_text, z_image(x_t, t)>] (both embeddings L2-normalised) shifts
the ancestral sampler's mean by variance * gradient, or DDIM's score. GLIDE compares this with
classifier-free guidance using the CFG-fine-tuned base model (models/cfg.pt) sampled with
guidance scale 1 for CLIP guidance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from pipeline.diffusion import SamplerSettings, clip_cond_fn
from pipeline.models.noised_clip import NoisedCLIP
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.text_to_image import (
    DEFAULT_SETTINGS,
    Conditioning,
    sample_images,
    to_uint8,
)
from pipeline.text.clip_tokens import clip_text_tokens


def clip_guidance_cond_fn(
    clip_model: NoisedCLIP, prompts: Sequence[str], scale: float
) -> Callable[..., Tensor]:
    """The sampler's cond_fn for ``prompts`` (one per sample in the batch)."""
    device = clip_model.logit_scale.device
    with torch.no_grad():
        z_text = clip_model.encode_text(
            clip_text_tokens(list(prompts), clip_model.text_ctx).to(device)
        )
    return clip_cond_fn(
        clip_model.encode_image,
        z_text,
        clip_model.clamped_logit_scale().detach(),
        float(scale),
    )


def check_clip_for_model(
    clip_info: dict[str, Any], clip_model: NoisedCLIP, image_size: int, diffusion: dict[str, Any]
) -> None:
    """ValueError unless the noised CLIP reads the base model's images and noise levels."""
    if not clip_info.get("extra", {}).get("noised", True):
        raise ValueError(
            "this CLIP was trained on clean images only (the evaluation CLIP): CLIP guidance "
            "needs the noised CLIP (models/noised_clip.pt)"
        )
    if clip_model.image_size != int(image_size):
        raise ValueError(
            f"the noised CLIP reads {clip_model.image_size}x{clip_model.image_size} images, "
            f"the model samples {image_size}x{image_size}"
        )
    trained_on = clip_info.get("diffusion", {})
    for key in ("diffusion_steps", "noise_schedule"):
        if key in trained_on and str(trained_on[key]) != str(diffusion[key]):
            raise ValueError(
                f"the noised CLIP was trained with {key}={trained_on[key]!r}, the model samples "
                f"with {diffusion[key]!r}"
            )


def sample_clip_guided(
    sampler: SamplingModel,
    clip_model: NoisedCLIP,
    prompts: Sequence[str],
    settings: SamplerSettings = DEFAULT_SETTINGS,
    *,
    clip_guidance_scale: float,
) -> Tensor:
    """Sample one image per prompt with CLIP guidance at ``clip_guidance_scale`` and no
    classifier-free guidance. Returns uint8 [N, H, W, 3]."""
    clip_model.requires_grad_(False)

    def cond_fn_for(batch: list[str]) -> Callable[..., Tensor]:
        return clip_guidance_cond_fn(clip_model, batch, clip_guidance_scale)

    conditioning = Conditioning(guidance_scale=1.0, cond_fn_for=cond_fn_for)
    return to_uint8(sample_images(sampler, prompts, settings, conditioning))
