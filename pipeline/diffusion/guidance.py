"""Guidance: the classifier-free guidance combiner and the CLIP guidance gradient.

Classifier-free guidance (GLIDE Sec. 2.3): the caller builds a doubled batch
[conditional; unconditional] (model_kwargs doubled, e.g. captions then empty captions) and samples
with the wrapped model. The wrapped model reads x_t from the first half only, so the second half
of the sampler's batch is a by-product (it gets its own noise): keep the first half.

CLIP guidance (GLIDE Sec. 2.2): the gradient of exp(logit_scale) * <z_text, z_image(x_t, t)>
(both L2-normalised) with respect to x_t, scaled, used as a sampler `cond_fn`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Model = Callable[..., Tensor]


def combine_guided_output(model_output: Tensor, channels: int, guidance_scale: float) -> Tensor:
    """Guided half-batch output from the doubled output [2B, 2C, H, W] -> [B, 2C, H, W].

    eps = eps_u + s (eps_c - eps_u) on the first `channels` channels (computed with lerp, so that
    s = 1 gives eps_c and s = 0 gives eps_u exactly); the variance channels come from the
    conditional half.
    """
    half = model_output.shape[0] // 2
    cond, uncond = model_output[:half], model_output[half:]
    eps = torch.lerp(uncond[:, :channels], cond[:, :channels], guidance_scale)
    return torch.cat([eps, cond[:, channels:]], dim=1)


def classifier_free_guidance_model(model: Model, guidance_scale: float) -> Model:
    """Wrap `model` for classifier-free guidance in ONE forward pass per step.

    The returned callable takes x_t [2B, C, H, W] (its first half is used for both halves), t [2B]
    and the caller's doubled model_kwargs ([conditional; unconditional]); it returns the guided
    output [2B, 2C, H, W], duplicated to the full batch so that the sampler keeps a doubled batch
    (the caller keeps the first half of the samples).
    """

    def guided(x: Tensor, t: Tensor, **model_kwargs: Any) -> Tensor:
        if x.shape[0] % 2 != 0:
            raise ValueError(f"classifier-free guidance needs an even batch, got {x.shape[0]}")
        half = x[: x.shape[0] // 2]
        model_output = model(torch.cat([half, half], dim=0), t, **model_kwargs)
        guided_half = combine_guided_output(model_output, x.shape[1], guidance_scale)
        return torch.cat([guided_half, guided_half], dim=0)

    return guided


def clip_cond_fn(
    image_embed_fn: Callable[[Tensor, Tensor], Tensor],
    text_embeds: Tensor,
    logit_scale: float | Tensor,
    guidance_scale: float,
) -> Callable[..., Tensor]:
    """A sampler cond_fn for CLIP guidance.

    image_embed_fn(x_t [B, C, H, W], t [B] original timesteps) -> image embeddings [B, D]
        (a noised CLIP image encoder).
    text_embeds: [B, D] caption embeddings (normalised here; gradients do not flow into them).
    Returns cond_fn(x_t, t, **_) = guidance_scale * grad_x sum_b exp(logit_scale) <z_text_b,
    z_image_b>; the sum decouples samples, so each gets the gradient of its own similarity.
    """
    z_text = F.normalize(text_embeds.detach(), dim=-1)

    def cond_fn(x: Tensor, t: Tensor, **_: Any) -> Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            z_image = F.normalize(image_embed_fn(x_in, t), dim=-1)
            scale = torch.exp(
                torch.as_tensor(logit_scale, dtype=z_image.dtype, device=z_image.device)
            )
            similarity = scale * (z_text.to(z_image) * z_image).sum(dim=-1)  # [B]
            (grad,) = torch.autograd.grad(similarity.sum(), x_in)
        return grad * guidance_scale

    return cond_fn
