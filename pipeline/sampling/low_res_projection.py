"""Keeping an upsampler's x0 predictions consistent with its low-res input.

The shard stage makes each low-res image the box (area) average of its high-res one over
``factor x factor`` blocks (pipeline/data/image_prep.py), so a correct upsampling has exactly the
low-res image as its block averages. Projecting every x0 prediction of the sampler onto such
images (x0 + nearest-upsampled(low_res - box-average(x0)), DDNM's range-null-space step for a
box-average degradation) removes what the network gets wrong in the block means, such as the
colour casts of an upsampler trained on crops and run on whole images, and keeps what it adds
within each block (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor


def project_onto_low_res(x0: Tensor, low_res: Tensor) -> Tensor:
    """``x0`` [B, C, H, W] moved so that its averages over (H/h x W/w) blocks equal ``low_res``
    [B, C, h, w]; within each block its deviations from the block mean are kept."""
    height, low = x0.shape[-1], low_res.shape[-1]
    if x0.shape[-2] != height or low_res.shape[-2] != low or height % low:
        raise ValueError(
            f"projection needs square images, the high-res side a multiple of the "
            f"low-res one; got {list(x0.shape)} and {list(low_res.shape)}"
        )
    factor = height // low
    error = low_res.to(x0.dtype) - F.avg_pool2d(x0, factor)
    return x0 + F.interpolate(error, scale_factor=factor, mode="nearest")


def low_res_projection(
    low_res: Tensor, then: Callable[[Tensor], Tensor] | None = None
) -> Callable[[Tensor], Tensor]:
    """A sampler ``denoised_fn``: project each x0 onto ``low_res`` [B, C, h, w] (repeated when x0
    carries guidance copies of the batch), then apply ``then`` (e.g. pasting a known region)."""

    def project(x0: Tensor) -> Tensor:
        copies = x0.shape[0] // low_res.shape[0]  # 1 unless guided: no copy made then
        target = low_res if copies == 1 else low_res.repeat(copies, 1, 1, 1)
        projected = project_onto_low_res(x0, target)
        return projected if then is None else then(projected)

    return project
