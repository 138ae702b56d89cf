"""Imagen-style noise conditioning augmentation of a super-resolution model's low-res input.

The low-res image is corrupted by the forward process of the model's own diffusion at an
augmentation level ``s`` (an integer in ``[0, T]``): level 0 leaves it unchanged, level ``s > 0``
draws ``q(x_{s-1} | x_0)``. The model is told the level (``aug_level``, in timestep units, through
an embedding added like the timestep's), so at sampling time a chosen level makes it robust to
the artefacts of the base model's samples. GLIDE's released upsampler has no augmentation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gaussian_diffusion import GaussianDiffusion, gaussian_noise


def noise_augment(
    diffusion: GaussianDiffusion,
    low_res: Tensor,
    levels: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``low_res`` [B, C, h, w] in [-1, 1] noised at ``levels``; ``diffusion`` is the model's
    full (not respaced) one, so a level means the same at training and sampling time. Levels are int [B] in [0, T];
    level 0 rows come back unchanged. Noise is drawn from ``generator`` (the global RNG when None)."""
    levels = levels.to(low_res.device).long()
    if levels.shape != (low_res.shape[0],):
        raise ValueError(f"levels must be [{low_res.shape[0]}], got {list(levels.shape)}")
    if bool((levels < 0).any()) or bool((levels > diffusion.num_timesteps).any()):
        raise ValueError(f"augmentation levels must be in [0, {diffusion.num_timesteps}]")
    noise = gaussian_noise(low_res.shape, generator, low_res.device, low_res.dtype)
    noised = diffusion.q_sample(low_res, (levels - 1).clamp(min=0), noise)
    keep = (levels == 0).view(-1, *([1] * (low_res.ndim - 1)))
    return torch.where(keep, low_res, noised.to(low_res.dtype))


def random_levels(
    batch: int, max_level: int, device: torch.device | str, generator: torch.Generator | None = None
) -> Tensor:
    """Training levels: uniform integers in ``[0, max_level]``, int64 [B]."""
    return torch.randint(0, int(max_level) + 1, (batch,), generator=generator, device=device)
