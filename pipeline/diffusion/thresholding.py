"""Thresholding of the predicted x0 during sampling.

Static: clip to [-1, 1] (GLIDE, ADM). Dynamic (Imagen): per sample, s = the p-th percentile of
|x0|, s = max(s, 1), clip x0 to [-s, s] and divide by s, which pulls saturated pixels inwards
at high guidance scales instead of flattening them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def static_threshold(x0: Tensor) -> Tensor:
    """Clip x0 to [-1, 1]."""
    return x0.clamp(-1.0, 1.0)


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Imagen dynamic thresholding of x0 [B, ...] with percentile p in (0, 1].

    Each sample gets its own s = max(quantile_p(|x0|), 1); the result lies in [-1, 1] and samples
    whose p-th percentile is already within [-1, 1] are clipped to [-1, 1] only.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    flat = x0.detach().reshape(x0.shape[0], -1).abs()
    compute_dtype = torch.promote_types(flat.dtype, torch.float32)
    s = torch.quantile(flat.to(compute_dtype), percentile, dim=1).clamp(min=1.0)
    s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))  # [B, 1, 1, 1]
    return torch.maximum(torch.minimum(x0, s), -s) / s


def apply_threshold(x0: Tensor, clip_denoised: bool, threshold: float | None) -> Tensor:
    """Dynamic thresholding when `threshold` (a percentile) is given, else static clipping when
    `clip_denoised`, else x0 unchanged."""
    if threshold is not None:
        return dynamic_threshold(x0, threshold)
    if clip_denoised:
        return static_threshold(x0)
    return x0
